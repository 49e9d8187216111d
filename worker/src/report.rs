//! The report job: runs one of [`readmodel::reports`] in a read-only,
//! repeatable-read transaction (a consistent picture that locks nothing the
//! projector writes), counts its rows for the progress, and streams them to
//! a thread that writes the file — CSV, XLSX (rust_xlsxwriter in constant
//! memory mode: a row is written out before the next) or NDJSON — in
//! scratch space. The runner stores the file with the job's finish, in one
//! transaction, so a report is complete or absent; a killed worker's report
//! is written again from the start by the next attempt.

use std::io::Write;
use std::path::PathBuf;

use command_service::jobs::params::{ReportFormat, ReportParams};
use futures::StreamExt;
use platform::jobs::lease::Claimed;
use readmodel::reports::{self, Column, Filters, Report};
use sqlx::{Connection, Row};

use crate::runner::{Control, Finished, JobError, ResultFile, Runner};

/// Rows handed to the writing thread at a time.
const BATCH: usize = 500;
/// The rows of a spreadsheet, with its header.
const XLSX_MAX_ROWS: i64 = 1_048_576;

type Rows = Vec<Vec<Option<String>>>;

pub async fn run(runner: &Runner, claimed: &Claimed, control: &Control) -> Result<Finished, JobError> {
    let params: ReportParams = serde_json::from_value(claimed.job.params.clone())
        .map_err(|e| JobError::Input(format!("bad parameters: {e}")))?;
    let mut conn = runner.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    let generation = readmodel::serving(&mut *tx).await.map_err(JobError::Transient)?;
    let (report, filters) = spec(&params, &generation.schema);

    control.progress(0, None, "counting");
    let count_sql = format!("select count(*) from ({}) r", report.sql);
    let total: i64 = reports::bind(&count_sql, &filters).fetch_one(&mut *tx).await?.try_get(0)?;
    if params.format() == ReportFormat::Xlsx && total >= XLSX_MAX_ROWS {
        return Err(JobError::Input(format!("{total} rows do not fit a spreadsheet ({} at most); ask for csv", XLSX_MAX_ROWS - 1)));
    }
    control.progress(0, Some(total), "writing");

    let (ext, content_type) = match params.format() {
        ReportFormat::Csv => ("csv", "text/csv; charset=utf-8"),
        ReportFormat::Xlsx => ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ReportFormat::Ndjson => ("ndjson", "application/x-ndjson"),
    };
    let scratch = if runner.settings.scratch_dir.is_empty() { std::env::temp_dir() } else { PathBuf::from(&runner.settings.scratch_dir) };
    let path = scratch.join(format!("erp-report-{}-{}.{ext}", claimed.job.id, claimed.token));
    let (sender, receiver) = tokio::sync::mpsc::channel::<Rows>(4);
    let writer = {
        let (path, columns, format, name) = (path.clone(), report.columns.clone(), params.format(), params.name());
        tokio::task::spawn_blocking(move || write_file(&path, format, name, &columns, receiver))
    };

    let width = report.columns.len();
    let mut rows = reports::bind(&report.sql, &filters).fetch(&mut *tx);
    let mut batch = Vec::with_capacity(BATCH);
    let mut done = 0i64;
    let mut stopped = false;
    let started = tokio::time::Instant::now();
    let rate = runner.settings.report_rows_per_sec;
    while let Some(row) = rows.next().await {
        let row = row?;
        batch.push((0..width).map(|i| row.try_get::<Option<String>, _>(i)).collect::<Result<Vec<_>, _>>()?);
        done += 1;
        if batch.len() == BATCH {
            if control.stopped().is_some() || sender.send(std::mem::take(&mut batch)).await.is_err() {
                stopped = true;
                break;
            }
            control.progress(done, None, "writing");
            if rate > 0 {
                tokio::time::sleep_until(started + std::time::Duration::from_secs_f64(done as f64 / rate as f64)).await;
            }
        }
    }
    drop(rows);
    if !stopped && !batch.is_empty() {
        let _ = sender.send(batch).await;
    }
    drop(sender);
    let written = writer.await.map_err(|e| JobError::Transient(e.into()))?;
    if stopped || control.stopped().is_some() {
        let _ = std::fs::remove_file(&path);
        return match written {
            Err(e) => Err(JobError::Transient(e)),
            Ok(_) => Err(JobError::Stopped),
        };
    }
    let bytes = written.map_err(JobError::Transient)?;
    tx.rollback().await?;
    control.progress(done, Some(total), "storing");
    let file = format!("{}-{}.{ext}", params.name(), chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let result = serde_json::json!({
        "report": params.name(),
        "format": ext,
        "rows": done,
        "bytes": bytes,
        "file": file,
        "download": format!("/jobs/{}/result", claimed.job.id),
    });
    Ok(Finished { result, file: Some(ResultFile { path, content_type }) })
}

/// The report and filters `params` ask for.
fn spec(params: &ReportParams, schema: &str) -> (Report, Filters) {
    let mut filters = Filters::default();
    let report = match params.clone() {
        ReportParams::Stock { as_of, warehouse, .. } => {
            filters.as_of = as_of;
            filters.warehouse = warehouse;
            reports::stock(schema, as_of.is_some())
        }
        ReportParams::Movements { from, to, article, category, warehouse, .. } => {
            filters = Filters { from: Some(from), to: Some(to), article, category, warehouse, ..filters };
            reports::movements(schema)
        }
        ReportParams::Expiring { days, .. } => {
            filters.expiring_by = Some(chrono::Utc::now().date_naive() + chrono::Days::new(days.unwrap_or(30).max(0) as u64));
            reports::expiring(schema)
        }
        ReportParams::LowStock { .. } => reports::low_stock(schema),
        ReportParams::ChargesPerCategory { .. } => reports::charges_per_category(schema),
        ReportParams::Catalogue { .. } => reports::catalogue(schema),
    };
    (report, filters)
}

/// Writes the rows arriving on `rows` to `path`; the bytes written.
fn write_file(
    path: &std::path::Path,
    format: ReportFormat,
    name: &str,
    columns: &[Column],
    mut rows: tokio::sync::mpsc::Receiver<Rows>,
) -> anyhow::Result<u64> {
    match format {
        ReportFormat::Csv | ReportFormat::Ndjson => {
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(path)?);
            let mut line = Vec::new();
            if format == ReportFormat::Csv {
                platform::csv::line(&mut line, columns.iter().map(|c| c.name));
                out.write_all(&line)?;
            }
            while let Some(batch) = rows.blocking_recv() {
                for row in batch {
                    line.clear();
                    if format == ReportFormat::Csv {
                        platform::csv::line(&mut line, row.iter().map(|v| v.as_deref().unwrap_or("")));
                    } else {
                        let object: serde_json::Map<String, serde_json::Value> = columns
                            .iter()
                            .zip(row)
                            .map(|(c, v)| {
                                let value = match v {
                                    None => serde_json::Value::Null,
                                    Some(v) if c.number => v.parse::<i64>().map(Into::into).unwrap_or(serde_json::Value::String(v)),
                                    Some(v) => serde_json::Value::String(v),
                                };
                                (c.name.to_owned(), value)
                            })
                            .collect();
                        serde_json::to_writer(&mut line, &object)?;
                        line.push(b'\n');
                    }
                    out.write_all(&line)?;
                }
            }
            out.flush()?;
        }
        ReportFormat::Xlsx => {
            let mut workbook = rust_xlsxwriter::Workbook::new();
            let sheet = workbook.add_worksheet_with_constant_memory()?;
            sheet.set_name(name)?;
            for (c, column) in columns.iter().enumerate() {
                sheet.write_string(0, c as u16, column.name)?;
            }
            let mut r: u32 = 1;
            while let Some(batch) = rows.blocking_recv() {
                for row in batch {
                    for (c, (column, value)) in columns.iter().zip(row).enumerate() {
                        let Some(value) = value else { continue };
                        match value.parse::<f64>() {
                            Ok(n) if column.number => sheet.write_number(r, c as u16, n)?,
                            _ => sheet.write_string(r, c as u16, platform::csv::neutralise(&value))?,
                        };
                    }
                    r += 1;
                }
            }
            workbook.save(path)?;
        }
    }
    Ok(std::fs::metadata(path)?.len())
}
