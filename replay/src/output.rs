//! Writing exported events: NDJSON (one stored event per line, with where it
//! was on the topic) or CSV (one row per event, the common fields as
//! columns and the event data as JSON).

use std::io::Write;

use events::RecordedEvent;
use serde::Serialize;

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line: the stored event plus `partition` and `offset`.
    Ndjson,
    /// A header row, then one row per event.
    Csv,
}

#[derive(Serialize)]
struct Line<'a> {
    partition: i32,
    offset: i64,
    #[serde(flatten)]
    event: &'a RecordedEvent,
}

/// CSV columns, in order.
pub const CSV_COLUMNS: [&str; 17] = [
    "partition", "offset", "event_id", "stream", "sequence", "type", "schema_version", "posted_at", "recorded_at",
    "article", "charge", "warehouse", "from", "to", "quantity", "delta", "data",
];

/// Writes events in one format.
pub struct Writer<W: Write> {
    out: W,
    format: Format,
}

impl<W: Write> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("format", &self.format).finish_non_exhaustive()
    }
}

impl<W: Write> Writer<W> {
    /// Starts the output (the CSV header row).
    pub fn new(mut out: W, format: Format) -> std::io::Result<Self> {
        if format == Format::Csv {
            writeln!(out, "{}", CSV_COLUMNS.join(","))?;
        }
        Ok(Self { out, format })
    }

    pub fn write(&mut self, partition: i32, offset: i64, event: &RecordedEvent) -> std::io::Result<()> {
        match self.format {
            Format::Ndjson => {
                serde_json::to_writer(&mut self.out, &Line { partition, offset, event })?;
                writeln!(self.out)
            }
            Format::Csv => {
                let data = |name: &str| match event.data.get(name) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let fields = [
                    partition.to_string(),
                    offset.to_string(),
                    event.event_id.to_string(),
                    event.stream_id.to_string(),
                    event.sequence.to_string(),
                    event.event_type.clone(),
                    event.schema_version.to_string(),
                    time(event.posted_at),
                    time(event.recorded_at),
                    event.kafka_key().to_owned(),
                    data("charge"),
                    data("warehouse"),
                    data("from"),
                    data("to"),
                    data("quantity"),
                    data("delta"),
                    event.data.to_string(),
                ];
                let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                writeln!(self.out, "{}", row.join(","))
            }
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_with_separators_or_quotes_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("{\"a\":1}"), "\"{\"\"a\"\":1}\"");
    }
}
