//! What each kind of job is asked to do: the parameters the command-service
//! checks at submission and stores with the job, and the worker reads back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Kind names, as stored in `jobs.kind`.
pub const IMPORT: &str = "import";
pub const REPORT: &str = "report";
pub const SELFTEST: &str = "selftest";
pub const KINDS: [&str; 3] = [IMPORT, REPORT, SELFTEST];

/// How an import file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportFormat {
    /// A header line naming the columns (`type` and the fields), one record per line.
    Csv,
    /// One JSON object per line: `type` and the body of the HTTP operation.
    Ndjson,
}

/// An import job's parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportParams {
    pub format: ImportFormat,
    /// Decide every line and report the refused ones; write nothing.
    pub dry_run: bool,
    /// Size of the uploaded file.
    pub bytes: i64,
    /// Lines in the file (the total of its progress).
    pub lines: i64,
}

/// How a report is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    /// RFC 4180 with a header line; formula-like cells neutralised.
    #[default]
    Csv,
    /// A spreadsheet; numbers as numbers, formula-like text neutralised.
    Xlsx,
    /// One JSON object per line (the catalogue and the stock only).
    Ndjson,
}

/// How a report other than an export is written: CSV or a spreadsheet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SheetFormat {
    #[default]
    Csv,
    Xlsx,
}

impl From<SheetFormat> for ReportFormat {
    fn from(f: SheetFormat) -> Self {
        match f {
            SheetFormat::Csv => ReportFormat::Csv,
            SheetFormat::Xlsx => ReportFormat::Xlsx,
        }
    }
}

use crate::routes::nullable;

/// Body of `POST /jobs/reports`: which report (`report`) and its
/// parameters; each report takes only its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "report", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReportParams {
    /// Stock per article, charge and warehouse: now, or `as_of` a moment
    /// (posting time), optionally of one `warehouse`.
    Stock {
        #[serde(default)]
        format: ReportFormat,
        as_of: Option<DateTime<Utc>>,
        #[schema(schema_with = nullable::<events::WarehouseId>)]
        warehouse: Option<String>,
    },
    /// The movement journal of the period [`from`, `to`) by posting time,
    /// optionally of one `article`, `category` or `warehouse`.
    Movements {
        #[serde(default)]
        format: SheetFormat,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[schema(schema_with = nullable::<events::ArticleId>)]
        article: Option<String>,
        #[schema(schema_with = nullable::<events::Category>)]
        category: Option<String>,
        #[schema(schema_with = nullable::<events::WarehouseId>)]
        warehouse: Option<String>,
    },
    /// Charges in stock that expire within `days` days (default 30).
    Expiring {
        #[serde(default)]
        format: SheetFormat,
        #[serde(default, deserialize_with = "crate::routes::whole::optional")]
        #[schema(minimum = 0, maximum = 3650)]
        days: Option<i32>,
    },
    /// Articles whose available stock is below their reorder point.
    LowStock {
        #[serde(default)]
        format: SheetFormat,
    },
    /// Charges, charges in stock, stock and blocked stock per category.
    ChargesPerCategory {
        #[serde(default)]
        format: SheetFormat,
    },
    /// The article catalogue.
    Catalogue {
        #[serde(default)]
        format: ReportFormat,
    },
}

impl ReportParams {
    /// Refuses what the document cannot say, naming the field: an invalid
    /// id, a number out of range.
    pub fn check(&self) -> Result<(), ApiError> {
        use crate::routes::field;
        let id = |name: &str, value: &Option<String>, parse: fn(String) -> Result<(), String>| match value {
            Some(v) => field(name, parse(v.clone())),
            None => Ok(()),
        };
        let warehouse = |v: String| events::WarehouseId::parse(v).map(drop).map_err(|e| e.to_string());
        let article = |v: String| events::ArticleId::parse(v).map(drop).map_err(|e| e.to_string());
        let category = |v: String| events::Category::parse(v).map(drop).map_err(|e| e.to_string());
        match self {
            ReportParams::Stock { warehouse: w, .. } => id("warehouse", w, warehouse),
            ReportParams::Movements { article: a, category: c, warehouse: w, .. } => {
                id("article", a, article)?;
                id("category", c, category)?;
                id("warehouse", w, warehouse)
            }
            ReportParams::Expiring { days, .. } => match days {
                Some(d) if !(0..=3650).contains(d) => Err(ApiError::invalid("days", "must be 0 to 3650")),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The report's name, as in its file name.
    pub fn name(&self) -> &'static str {
        match self {
            ReportParams::Stock { .. } => "stock",
            ReportParams::Movements { .. } => "movements",
            ReportParams::Expiring { .. } => "expiring",
            ReportParams::LowStock { .. } => "low-stock",
            ReportParams::ChargesPerCategory { .. } => "charges-per-category",
            ReportParams::Catalogue { .. } => "catalogue",
        }
    }

    pub fn format(&self) -> ReportFormat {
        match self {
            ReportParams::Stock { format, .. } | ReportParams::Catalogue { format } => *format,
            ReportParams::Movements { format, .. }
            | ReportParams::Expiring { format, .. }
            | ReportParams::LowStock { format }
            | ReportParams::ChargesPerCategory { format } => (*format).into(),
        }
    }
}

/// Body of `POST /jobs/selftest`: a job that exercises the job system
/// itself (operators: check a worker's retries, cancel and progress).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelftestParams {
    /// Steps to take (its progress total).
    #[serde(deserialize_with = "crate::routes::whole::required")]
    #[schema(minimum = 1, maximum = 100000)]
    pub steps: i64,
    /// Milliseconds per step.
    #[serde(default, deserialize_with = "crate::routes::whole::required")]
    #[schema(minimum = 0, maximum = 60000)]
    pub step_ms: u64,
    /// Fail this many attempts (after their steps) before succeeding.
    #[serde(default, deserialize_with = "crate::routes::whole::required")]
    #[schema(minimum = 0, maximum = 100)]
    pub fail_attempts: i32,
}

impl SelftestParams {
    pub fn check(&self) -> Result<(), ApiError> {
        if !(1..=100_000).contains(&self.steps) {
            return Err(ApiError::invalid("steps", "must be 1 to 100000"));
        }
        if self.step_ms > 60_000 {
            return Err(ApiError::invalid("step_ms", "must be at most 60000"));
        }
        if !(0..=100).contains(&self.fail_attempts) {
            return Err(ApiError::invalid("fail_attempts", "must be 0 to 100"));
        }
        Ok(())
    }
}
