//! Paging: the `limit` and opaque `cursor` of every list.
//!
//! A cursor is the sort key of the last item of a page, together with the
//! list it belongs to, hex-encoded: clients pass it back unchanged, and a
//! cursor of one list is refused by another (400).

use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::settings::PageSettings;

/// The query parameters of a page.
#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A validated page request: how many items, after which sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub limit: u32,
    /// The sort key of the previous page's last item; `None` on the first page.
    pub after: Option<Vec<Value>>,
}

impl Page {
    /// Validates `limit` (1 to the maximum) and the cursor of list `kind`.
    pub fn parse(params: &PageParams, kind: &str, settings: &PageSettings) -> Result<Self, ApiError> {
        let limit = match &params.limit {
            None => settings.default_limit,
            Some(raw) => raw.parse::<u32>().ok().filter(|l| (1..=settings.max_limit).contains(l)).ok_or_else(|| {
                ApiError::bad("limit", format!("must be an integer from 1 to {}, got {raw:?}", settings.max_limit))
            })?,
        };
        let after = params.cursor.as_deref().map(|raw| decode(kind, raw)).transpose()?;
        Ok(Self { limit, after })
    }

    /// What identifies this page in a cache key: its limit and where it starts.
    pub fn key_part(&self) -> String {
        let after = self.after.as_ref().map(|a| serde_json::to_string(a).expect("a sort key serialises"));
        format!("{}:{}", self.limit, after.unwrap_or_default())
    }

    /// The `i`-th value of the cursor's sort key as a string.
    pub fn key_str(&self, i: usize) -> Option<String> {
        self.after.as_ref().and_then(|k| k.get(i)).and_then(Value::as_str).map(str::to_owned)
    }

    /// The `i`-th value of the cursor's sort key as an integer.
    pub fn key_i64(&self, i: usize) -> Option<i64> {
        self.after.as_ref().and_then(|k| k.get(i)).and_then(Value::as_i64)
    }
}

/// The cursor after an item whose sort key is `key`, in list `kind`.
pub fn encode(kind: &str, key: Vec<Value>) -> String {
    let json = serde_json::to_vec(&(kind, key)).expect("a cursor serialises");
    json.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(kind: &str, raw: &str) -> Result<Vec<Value>, ApiError> {
    let bad = || ApiError::bad("cursor", "is not a cursor of this list; pass back the next_cursor of a page unchanged");
    if !raw.len().is_multiple_of(2) || raw.len() > 4096 {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..raw.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(raw.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (found, key): (String, Vec<Value>) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if found != kind {
        return Err(bad());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params(limit: Option<&str>, cursor: Option<String>) -> PageParams {
        PageParams { limit: limit.map(str::to_owned), cursor }
    }

    #[test]
    fn a_cursor_comes_back_as_the_sort_key_it_was_made_from() {
        let cursor = encode("catalogue", vec![json!("bolt"), json!("ART-1")]);
        let page = Page::parse(&params(Some("10"), Some(cursor)), "catalogue", &PageSettings::default()).unwrap();
        assert_eq!(page.limit, 10);
        assert_eq!((page.key_str(0).as_deref(), page.key_str(1).as_deref()), (Some("bolt"), Some("ART-1")));
    }

    #[test]
    fn a_cursor_of_another_list_or_a_bad_one_is_refused_naming_the_field() {
        let other = encode("low-stock", vec![json!("ART-1")]);
        for cursor in [other, "zz".to_owned(), "abc".to_owned(), "7b7d".to_owned()] {
            let err = Page::parse(&params(None, Some(cursor)), "catalogue", &PageSettings::default()).unwrap_err();
            assert!(matches!(err, ApiError::BadParameter { ref field, .. } if field == "cursor"));
        }
    }

    #[test]
    fn a_limit_out_of_range_is_refused_and_no_limit_takes_the_default() {
        let settings = PageSettings::default();
        for limit in ["0", "501", "ten", "-1"] {
            assert!(Page::parse(&params(Some(limit), None), "x", &settings).is_err(), "{limit}");
        }
        assert_eq!(Page::parse(&params(None, None), "x", &settings).unwrap().limit, 50);
    }
}
