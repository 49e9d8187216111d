//! The analysts' tool: read the events topic (the system of record) from
//! any point to any point, filter it, export it as NDJSON or CSV, and fold
//! it into the stock as of any moment. See docs/analysts.md.

pub mod asof;
pub mod filter;
pub mod output;
pub mod reader;

use chrono::{DateTime, NaiveDate, Utc};

/// Reads a time given as RFC 3339 (`2026-11-22T12:00:00Z`) or as a date
/// (`2026-11-22`, the start of that day in UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = s.parse::<NaiveDate>() {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!("{s:?} is neither an RFC 3339 time (2026-11-22T12:00:00Z) nor a date (2026-11-22)"))
}

/// Reads `partition:offset` pairs, comma-separated (`0:120,3:75`).
pub fn parse_offsets(s: &str) -> Result<std::collections::BTreeMap<i32, i64>, String> {
    s.split(',')
        .map(|pair| {
            let (p, o) = pair.trim().split_once(':').ok_or_else(|| format!("{pair:?} is not partition:offset"))?;
            let p: i32 = p.parse().map_err(|_| format!("partition {p:?} is not a number"))?;
            let o: i64 = o.parse().map_err(|_| format!("offset {o:?} is not a number"))?;
            if p < 0 || o < 0 {
                return Err(format!("{pair:?}: partitions and offsets are not negative"));
            }
            Ok((p, o))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_dates_and_anything_else_says_what_is_expected() {
        assert_eq!(parse_time("2026-11-22").unwrap(), parse_time("2026-11-22T00:00:00Z").unwrap());
        assert_eq!(parse_time("2026-11-22T13:00:00+01:00").unwrap(), parse_time("2026-11-22T12:00:00Z").unwrap());
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn offsets_are_partition_offset_pairs() {
        assert_eq!(parse_offsets("0:120, 3:75").unwrap(), [(0, 120), (3, 75)].into());
        assert!(parse_offsets("0-120").is_err());
        assert!(parse_offsets("0:-1").is_err());
    }
}
