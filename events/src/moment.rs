//! A moment as people write it when they ask "as of when": an RFC 3339 time
//! or a date. Read the same way by the analysts' CLI and the query-service.

use chrono::{DateTime, NaiveDate, Utc};

/// Reads `2026-11-22T12:00:00Z` (any offset) or `2026-11-22` (the start of
/// that day in UTC); the error says what is expected.
pub fn parse_moment(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = s.parse::<NaiveDate>() {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!("{s:?} is neither an RFC 3339 time (2026-11-22T12:00:00Z) nor a date (2026-11-22)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_rfc3339_times_or_dates_and_anything_else_says_what_is_expected() {
        assert_eq!(parse_moment("2026-11-22").unwrap(), parse_moment("2026-11-22T00:00:00Z").unwrap());
        assert_eq!(parse_moment("2026-11-22T13:00:00+01:00").unwrap(), parse_moment("2026-11-22T12:00:00Z").unwrap());
        assert!(parse_moment("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
