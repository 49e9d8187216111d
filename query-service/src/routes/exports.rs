//! `GET /exports/catalogue` and `GET /exports/stock`: a whole read model as
//! CSV (`format=csv`, the default) or NDJSON (`format=ndjson`), streamed
//! with chunked encoding in constant memory: a task reads the rows one by
//! one from one statement and hands the body chunks of about 64 KiB through
//! a channel of four, so a slow client slows the read instead of filling
//! memory. CSV cells that a spreadsheet would take for a formula (starting
//! with `=`, `+`, `-`, `@`, tab or carriage return) are prefixed with `'`.
//! Served to `analyst`s, never cached.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use readmodel::exports::{self, CatalogueRow, ExportRow, StockRow};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::params::QueryString;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(catalogue)).routes(routes!(stock))
}

/// The `format` parameter.
#[derive(Debug)]
pub struct FormatValue;

impl schemars::JsonSchema for FormatValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ExportFormat".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "enum": ["csv", "ndjson"] })
    }
}

platform::parameters!(
    /// How an export is written.
    ExportQuery { "format": FormatValue, Query, optional, "`csv` (the default, with a header line) or `ndjson` (one JSON object per line)" }
);

#[derive(Debug, Deserialize)]
struct ExportParams {
    format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Ndjson,
}

fn format(params: &ExportParams) -> Result<Format, ApiError> {
    match params.format.as_deref() {
        None | Some("csv") => Ok(Format::Csv),
        Some("ndjson") => Ok(Format::Ndjson),
        Some(other) => Err(ApiError::bad("format", format!("must be csv or ndjson, got {other:?}"))),
    }
}

/// The article catalogue, every article by id.
#[utoipa::path(
    get, path = "/exports/catalogue", tag = "exports", security(("bearer" = ["analyst"])), params(ExportQuery),
    responses(
        (status = 200, description = "The catalogue as CSV (`text/csv`) or NDJSON (`application/x-ndjson`), streamed"),
        (status = 400, description = "An unknown `format`", content_type = "application/problem+json"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn catalogue(state: State<AppState>, params: QueryString<ExportParams>) -> Result<Response, ApiError> {
    export::<CatalogueRow>(state, params)
}

/// The stock of every charge in every warehouse, by article, charge and
/// warehouse, with the charge's category, quality status and expiry date.
#[utoipa::path(
    get, path = "/exports/stock", tag = "exports", security(("bearer" = ["analyst"])), params(ExportQuery),
    responses(
        (status = 200, description = "The stock as CSV (`text/csv`) or NDJSON (`application/x-ndjson`), streamed"),
        (status = 400, description = "An unknown `format`", content_type = "application/problem+json"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn stock(state: State<AppState>, params: QueryString<ExportParams>) -> Result<Response, ApiError> {
    export::<StockRow>(state, params)
}

/// Export `R` of the serving generation in the asked format, streamed.
fn export<R: ExportRow>(State(state): State<AppState>, QueryString(params): QueryString<ExportParams>) -> Result<Response, ApiError> {
    let format = format(&params)?;
    let schema = state.store.generation().map_err(|e| ApiError::Unavailable(e.into()))?.schema.clone();
    let pool = state.store.pool().clone();
    Ok(stream(format, R::NAME, move |tx| async move {
        let mut conn = pool.acquire().await?;
        let sql = R::sql(&schema);
        let mut rows = exports::rows::<R>(&mut conn, &sql);
        let mut out = Chunks::new(tx, format, R::HEADER);
        while let Some(row) = rows.next().await {
            let row = row?;
            if !out.push(&row, &row.fields()).await {
                break;
            }
        }
        out.finish().await;
        Ok(())
    }))
}

type Sender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Runs `write` in a task of its own and answers with what it sends.
fn stream<F, Fut>(format: Format, name: &str, write: F) -> Response
where
    F: FnOnce(Sender) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let failed = tx.clone();
    let what = name.to_owned();
    tokio::spawn(async move {
        if let Err(e) = write(tx).await {
            // The status is sent already: the body ends with an error, so
            // the client sees a broken transfer, never a short file.
            tracing::warn!(export = %what, error = %e, "export failed");
            let _ = failed.send(Err(std::io::Error::other("the export failed"))).await;
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.{extension}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Rows gathered into chunks of about 64 KiB.
struct Chunks {
    tx: Sender,
    format: Format,
    buffer: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl Chunks {
    fn new(tx: Sender, format: Format, header: &[&str]) -> Self {
        let mut buffer = Vec::with_capacity(CHUNK + 1024);
        if format == Format::Csv {
            platform::csv::line(&mut buffer, header.iter().copied());
        }
        Self { tx, format, buffer }
    }

    /// Adds a row; `false` when the client went away.
    async fn push<T: serde::Serialize>(&mut self, row: &T, fields: &[String]) -> bool {
        match self.format {
            Format::Csv => platform::csv::line(&mut self.buffer, fields.iter().map(String::as_str)),
            Format::Ndjson => {
                serde_json::to_writer(&mut self.buffer, row).expect("a row serialises");
                self.buffer.push(b'\n');
            }
        }
        if self.buffer.len() < CHUNK {
            return true;
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK + 1024));
        self.tx.send(Ok(Bytes::from(chunk))).await.is_ok()
    }

    async fn finish(self) {
        if !self.buffer.is_empty() {
            let _ = self.tx.send(Ok(Bytes::from(self.buffer))).await;
        }
    }
}
