//! Document keys and cache tags: the one place that builds and reads them.
//!
//! A **document key** names a stored document (`documents.key`, and in Redis
//! `{prefix}g{generation}:doc:{key}`): the stock of an article, a category's
//! summary. The query-service also caches computed answers (a charge, a
//! page of a list) under keys of their own, built here too, so that no two
//! answers share a key. A **tag** names what a change invalidates: the
//! projector publishes the tags of every document and row it changes, and
//! each cached answer carries the tags it depends on.

/// Key of the stock document of an article.
pub fn stock(article: &str) -> String {
    format!("stock:{article}")
}

/// Key of the summary document of a category.
pub fn category(category: &str) -> String {
    format!("category:{category}")
}

/// Whether `key` names a stored document (as opposed to a computed answer).
pub fn is_document(key: &str) -> bool {
    key.starts_with("stock:") || key.starts_with("category:")
}

/// The tags of the stored document under `key` (`stock:ART-1` →
/// `article:ART-1`); none for a key that names no document.
pub fn tags_of(key: &str) -> Vec<String> {
    match key.split_once(':') {
        Some(("stock", article)) => vec![article_tag(article)],
        Some(("category", name)) => vec![category_tag(name)],
        _ => Vec::new(),
    }
}

/// Cache key of one charge's detail.
pub fn charge(article: &str, charge: &str) -> String {
    format!("charge:{article}/{charge}")
}

/// Cache key of a computed list answer: its kind and every parameter that
/// shapes it (`None` for one not given), unambiguous whatever the values hold.
pub fn list(kind: &str, parts: &[Option<&str>]) -> String {
    let mut key = format!("list:{kind}");
    for part in parts {
        match part {
            None => key.push_str(":~"),
            Some(p) => {
                key.push(':');
                key.push_str(&p.len().to_string());
                key.push('=');
                key.push_str(p);
            }
        }
    }
    key
}

/// Tag of everything about one article: its stock document, charges,
/// charge details and movement history.
pub fn article_tag(article: &str) -> String {
    format!("article:{article}")
}

/// Tag of a category's summary document and charge list.
pub fn category_tag(category: &str) -> String {
    format!("category:{category}")
}

/// Tag of the article catalogue (names, categories, units, reorder points).
pub const CATALOGUE_TAG: &str = "catalogue";

/// Tag of the low-stock list.
pub const LOW_STOCK_TAG: &str = "low-stock";

/// Tag of everything (a generation swap, or a repair whose changes are not
/// known one by one).
pub const ALL_TAG: &str = "*";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_keys_are_told_apart_from_the_keys_of_computed_answers() {
        assert!(is_document(&stock("ART-1")) && is_document(&category("bolts")));
        assert!(!is_document(&charge("ART-1", "L1")));
        assert!(!is_document(&list("catalogue", &[None])));
    }

    #[test]
    fn a_document_key_carries_the_tag_of_what_it_shows() {
        assert_eq!(tags_of(&stock("ART-1")), vec![article_tag("ART-1")]);
        assert_eq!(tags_of(&category("bolts")), vec![category_tag("bolts")]);
        assert!(tags_of(&charge("ART-1", "L1")).is_empty());
    }

    #[test]
    fn list_keys_differ_whenever_a_parameter_does() {
        let keys = [
            list("catalogue", &[None, Some("a:b")]),
            list("catalogue", &[Some("a"), Some("b")]),
            list("catalogue", &[Some("a:1=b"), None]),
            list("catalogue", &[Some(""), None]),
            list("catalogue", &[None, None]),
        ];
        let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }
}
