//! What a line of a bulk import means: the command it asks for, read with
//! the same request types and the same conversions as the HTTP operations
//! (so a line is refused for the same reasons, naming the same field), or
//! why it is refused. The worker's `import` job reads the file; this module
//! knows one line at a time (docs/jobs.md has the formats).
//!
//! NDJSON: one JSON object per line, `type` plus the body of the HTTP
//! operation (`article` added for charges). CSV: a header line naming the
//! columns (`type` and any of [`CSV_COLUMNS`]), one record per line, empty
//! cells absent; the unit of an article is `unit_code` and `unit_decimals`.

use events::{ChargeNo, Command, QualityStatus, RegisterCharge};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::routes::articles::RegisterArticleRequest;
use crate::routes::charges::RegisterChargeRequest;
use crate::routes::stock::{CountRequest, Movement, MovementRequest, TransferRequest};
use crate::routes::articles::article_id;
use crate::routes::field;

/// The kinds of line, the role each needs, and the command it becomes.
pub const TYPES: &[(&str, &str)] = &[
    ("article", "master-data"),
    ("charge", "master-data"),
    ("receipt", "writer"),
    ("issue", "writer"),
    ("transfer", "writer"),
    ("count", "writer"),
];

/// Every column a CSV import may have besides `type`.
pub const CSV_COLUMNS: &[&str] = &[
    "article",
    "charge",
    "warehouse",
    "from",
    "to",
    "quantity",
    "counted",
    "posted_at",
    "name",
    "category",
    "unit_code",
    "unit_decimals",
    "reorder_point",
    "production_date",
    "expiry_date",
    "quality_status",
];

/// Columns whose cells are whole numbers.
const NUMERIC: &[&str] = &["quantity", "counted", "unit_decimals", "reorder_point"];

/// Why a line is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The problem type's code, as in the HTTP API's problem+json
    /// (`invalid-field`, `malformed-line`, `insufficient-stock`, ...).
    pub problem: String,
    /// The field it is about, when there is one.
    pub field: Option<String>,
    pub detail: String,
}

impl LineError {
    fn new(problem: &str, field: Option<&str>, detail: impl Into<String>) -> Self {
        Self { problem: problem.to_owned(), field: field.map(str::to_owned), detail: detail.into() }
    }
}

impl From<ApiError> for LineError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidField { field, reason } => LineError::new("invalid-field", Some(&field), reason),
            ApiError::Rule(rule) => LineError::new(rule.code(), None, rule.to_string()),
            other => LineError::new("invalid-line", None, other.to_string()),
        }
    }
}

/// The header of a CSV import: which column holds what.
#[derive(Debug, Clone)]
pub struct CsvHeader {
    columns: Vec<String>,
}

/// Reads a CSV header line; names the first column it does not know, or
/// says that `type` is missing.
pub fn csv_header(line: &[u8]) -> Result<CsvHeader, LineError> {
    let columns = csv_fields(line)?;
    if !columns.iter().any(|c| c == "type") {
        return Err(LineError::new("invalid-header", Some("type"), "the header has no `type` column"));
    }
    if let Some(unknown) = columns.iter().find(|c| *c != "type" && !CSV_COLUMNS.contains(&c.as_str())) {
        return Err(LineError::new(
            "invalid-header",
            Some(unknown),
            format!("unknown column {unknown:?}; the columns are type, {}", CSV_COLUMNS.join(", ")),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = columns.iter().find(|c| !seen.insert(c.as_str())) {
        return Err(LineError::new("invalid-header", Some(twice), format!("column {twice:?} appears twice")));
    }
    Ok(CsvHeader { columns })
}

/// The command a CSV record asks for.
pub fn csv_line(header: &CsvHeader, line: &[u8], roles: &[String]) -> Result<Command, LineError> {
    let cells = csv_fields(line)?;
    if cells.len() != header.columns.len() {
        return Err(LineError::new(
            "malformed-line",
            None,
            format!("{} cells where the header has {} columns", cells.len(), header.columns.len()),
        ));
    }
    let mut object = Map::new();
    let mut unit = Map::new();
    for (column, cell) in header.columns.iter().zip(cells) {
        if cell.is_empty() {
            continue;
        }
        let value = if NUMERIC.contains(&column.as_str()) {
            match cell.trim().parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => return Err(LineError::new("invalid-field", Some(column), format!("{cell:?} is not a whole number"))),
            }
        } else {
            Value::String(cell)
        };
        match column.as_str() {
            "unit_code" => unit.insert("code".into(), value),
            "unit_decimals" => unit.insert("decimals".into(), value),
            _ => object.insert(column.clone(), value),
        };
    }
    if !unit.is_empty() {
        object.insert("unit".into(), Value::Object(unit));
    }
    command(object, roles)
}

/// The command an NDJSON line asks for.
pub fn ndjson_line(line: &[u8], roles: &[String]) -> Result<Command, LineError> {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(object)) => command(object, roles),
        Ok(_) => Err(LineError::new("malformed-line", None, "a line must be a JSON object")),
        Err(e) => Err(LineError::new("malformed-line", None, format!("not JSON: {e}"))),
    }
}

/// The command of a line read into a JSON object.
fn command(mut object: Map<String, Value>, roles: &[String]) -> Result<Command, LineError> {
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(LineError::new("invalid-field", Some("type"), "must be a string")),
        None => return Err(LineError::new("invalid-field", Some("type"), "missing")),
    };
    let Some((_, role)) = TYPES.iter().find(|(t, _)| *t == kind) else {
        let known: Vec<&str> = TYPES.iter().map(|(t, _)| *t).collect();
        return Err(LineError::new("invalid-field", Some("type"), format!("unknown type {kind:?}; one of {}", known.join(", "))));
    };
    if !roles.iter().any(|r| r == role || r == "admin") {
        return Err(LineError::new("forbidden", Some("type"), format!("a {kind} line needs the role {role}")));
    }
    let command = match kind.as_str() {
        "article" => Command::RegisterArticle(body::<RegisterArticleRequest>(object)?.try_into()?),
        "charge" => {
            let article = match object.remove("article") {
                Some(Value::String(a)) => article_id(a)?,
                Some(_) => return Err(LineError::new("invalid-field", Some("article"), "must be a string")),
                None => return Err(LineError::new("invalid-field", Some("article"), "missing")),
            };
            let r = body::<RegisterChargeRequest>(object)?;
            Command::RegisterCharge(RegisterCharge {
                article,
                charge: field("charge", ChargeNo::parse(r.charge))?,
                production_date: r.production_date,
                expiry_date: r.expiry_date,
                quality_status: r.quality_status.unwrap_or(QualityStatus::Pending),
            })
        }
        "receipt" => Movement::try_from(body::<MovementRequest>(object)?)?.receipt(),
        "issue" => Movement::try_from(body::<MovementRequest>(object)?)?.issue(),
        "transfer" => Command::TransferStock(body::<TransferRequest>(object)?.try_into()?),
        "count" => Command::CountInventory(body::<CountRequest>(object)?.try_into()?),
        _ => unreachable!("checked against TYPES"),
    };
    Ok(command)
}

/// The line as the body type of its HTTP operation; a field that does not
/// fit is named.
fn body<T: DeserializeOwned>(object: Map<String, Value>) -> Result<T, LineError> {
    serde_path_to_error::deserialize::<_, T>(Value::Object(object)).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.inner().to_string();
        // A missing field is reported at the object itself ("."): name it.
        let field = if path == "." {
            reason.split('`').nth(1).map(str::to_owned).unwrap_or_else(|| "line".to_owned())
        } else {
            path
        };
        LineError { problem: "invalid-field".into(), field: Some(field), detail: reason }
    })
}

/// The fields of one CSV record (RFC 4180 quoting; a record is one line).
fn csv_fields(line: &[u8]) -> Result<Vec<String>, LineError> {
    let mut input = Vec::with_capacity(line.len() + 1);
    input.extend_from_slice(line);
    input.push(b'\n');
    let mut output = vec![0u8; input.len()];
    let mut ends = vec![0usize; input.len() + 1];
    let (result, _, written, n) = csv_core::Reader::new().read_record(&input, &mut output, &mut ends);
    if result != csv_core::ReadRecordResult::Record {
        return Err(LineError::new("malformed-line", None, "a quoted cell is not closed on its line"));
    }
    let text = std::str::from_utf8(&output[..written])
        .map_err(|_| LineError::new("invalid-encoding", None, "the line is not UTF-8"))?;
    let mut fields = Vec::with_capacity(n);
    let mut start = 0;
    for &end in &ends[..n] {
        fields.push(text[start..end].to_owned());
        start = end;
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Vec<String> {
        vec!["writer".into(), "master-data".into()]
    }

    #[test]
    fn csv_fields_unquote_and_split_on_commas_outside_quotes() {
        assert_eq!(csv_fields(b"a,\"b, c\",\"say \"\"hi\"\"\",").unwrap(), vec!["a", "b, c", "say \"hi\"", ""]);
        assert_eq!(csv_fields(b"a,\"open").unwrap_err().problem, "malformed-line");
    }

    #[test]
    fn a_csv_receipt_becomes_the_same_command_as_its_ndjson_line() {
        let header = csv_header(b"type,article,charge,warehouse,quantity").unwrap();
        let csv = csv_line(&header, b"receipt,ART-1,L1,WH-1,5", &roles()).unwrap();
        let json = ndjson_line(br#"{"type":"receipt","article":"ART-1","charge":"L1","warehouse":"WH-1","quantity":5}"#, &roles()).unwrap();
        assert_eq!(format!("{csv:?}"), format!("{json:?}"));
    }

    #[test]
    fn an_article_line_carries_its_unit_in_two_columns() {
        let header = csv_header(b"type,article,name,category,unit_code,unit_decimals").unwrap();
        let command = csv_line(&header, b"article,ART-1,Bolt,bolts,kg,3", &roles()).unwrap();
        assert!(matches!(command, Command::RegisterArticle(a) if a.unit.decimals == 3));
    }

    #[test]
    fn refusals_name_the_field() {
        let header = csv_header(b"type,article,charge,warehouse,quantity").unwrap();
        let e = csv_line(&header, b"receipt,ART-1,L1,WH-1,five", &roles()).unwrap_err();
        assert_eq!((e.problem.as_str(), e.field.as_deref()), ("invalid-field", Some("quantity")));
        let e = ndjson_line(br#"{"type":"receipt","article":"ART-1","charge":"L1","warehouse":"WH-1"}"#, &roles()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("quantity"));
        let e = ndjson_line(br#"{"type":"receipt","article":"no spaces","charge":"L1","warehouse":"WH-1","quantity":1}"#, &roles()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("article"));
        let e = ndjson_line(br#"{"type":"gift","article":"ART-1"}"#, &roles()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("type"));
        let e = ndjson_line(br#"[1]"#, &roles()).unwrap_err();
        assert_eq!(e.problem, "malformed-line");
    }

    #[test]
    fn a_line_needs_the_role_of_its_operation() {
        let e = ndjson_line(br#"{"type":"article","article":"ART-1","name":"n","category":"c","unit":{"code":"pc"}}"#, &["writer".into()])
            .unwrap_err();
        assert_eq!((e.problem.as_str(), e.field.as_deref()), ("forbidden", Some("type")));
    }

    #[test]
    fn a_header_with_an_unknown_or_missing_column_is_refused_naming_it() {
        assert_eq!(csv_header(b"type,article,colour").unwrap_err().field.as_deref(), Some("colour"));
        assert_eq!(csv_header(b"article,quantity").unwrap_err().field.as_deref(), Some("type"));
    }
}
