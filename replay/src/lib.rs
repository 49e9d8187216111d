//! The analysts' tool: read the events topic (the system of record) from
//! any point to any point, filter it, export it as NDJSON or CSV, and fold
//! it into the stock as of any moment. See docs/analysts.md.

pub mod asof;
pub mod filter;
pub mod output;
pub mod reader;

pub use events::parse_moment as parse_time;

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
    fn offsets_are_partition_offset_pairs() {
        assert_eq!(parse_offsets("0:120, 3:75").unwrap(), [(0, 120), (3, 75)].into());
        assert!(parse_offsets("0-120").is_err());
        assert!(parse_offsets("0:-1").is_err());
    }
}
