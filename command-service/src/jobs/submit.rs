//! Submitting jobs: `POST /jobs/imports` (the file is the body, streamed
//! into PostgreSQL chunk by chunk and checked on the way: size, encoding,
//! line length), `POST /jobs/reports` and `POST /jobs/selftest`. Each
//! answers 202 with `Location: /jobs/{id}`. An `Idempotency-Key` makes a
//! repeated submission answer with the job the first one created; a file
//! refused half-way leaves nothing behind (the job and its chunks are one
//! transaction).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use platform::auth::Principal;
use platform::jobs::files::Writer;
use platform::jobs::queue::{self, NewJob, Submitted};
use platform::jobs::{Job, Rights};
use platform::problem::Problem;
use serde::Deserialize;
use sqlx::Connection;
use uuid::Uuid;

use super::params::{self, ImportFormat, ImportParams, ReportParams, SelftestParams};
use crate::error::ApiError;
use crate::idempotency::key::IDEMPOTENCY_KEY;
use crate::routes::JsonBody;
use crate::state::AppState;

/// The answers to a submission.
#[derive(Debug, utoipa::IntoResponses)]
pub enum SubmitResponses {
    /// Queued; `Location` names it. Also the answer to a repeated
    /// submission with the same `Idempotency-Key` (the first one's job).
    #[response(status = 202, headers(("Location" = String, description = "`/jobs/{id}`")))]
    Accepted(Job),
    /// A parameter is invalid (`field` names it).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// The file is larger than `APP_JOBS__MAX_UPLOAD_BYTES`.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not JSON (reports, self-tests).
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// The file or a field is unusable (`field`, `reason`): empty, not
    /// UTF-8, a line over the limit; or the `Idempotency-Key` was used for
    /// another submission.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// PostgreSQL cannot be reached.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// `POST /jobs/imports` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// How the file is written (docs/jobs.md). May be left out when the
    /// `Content-Type` says it (`text/csv`, `application/x-ndjson`).
    #[param(required = true, value_type = ImportFormat)]
    format: Option<String>,
    /// Decide every line and report the refused ones, but write nothing.
    dry_run: Option<bool>,
}

/// The uploaded file: CSV or NDJSON text in UTF-8, not empty (docs/jobs.md has the formats).
#[derive(Debug)]
pub struct ImportFile;

impl utoipa::PartialSchema for ImportFile {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .description(Some("The file: CSV or NDJSON text in UTF-8 (docs/jobs.md)"))
            .into()
    }
}

impl utoipa::ToSchema for ImportFile {}

#[utoipa::path(
    post, path = "/jobs/imports", tag = "jobs", security(("bearer" = ["writer", "master-data"])),
    params(ImportQuery),
    request_body(content = ImportFile, content_type = "text/plain",
        description = "The file (CSV or NDJSON, UTF-8), streamed. Sent with any content type; `text/csv` and `application/x-ndjson` name the format."),
    responses(SubmitResponses)
)]
pub(super) async fn import(
    State(state): State<AppState>,
    principal: axum::Extension<Arc<Principal>>,
    headers: HeaderMap,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let query = query.map_err(|e| ApiError::bad_parameter("query", e.body_text()))?.0;
    let format = import_format(query.format.as_deref(), &headers)?;
    let dry_run = query.dry_run.unwrap_or(false);
    let limits = &state.jobs;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_upload_bytes) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut new = new_job(&principal, &headers, params::IMPORT, serde_json::json!({ "format": format, "dry_run": dry_run }), limits.max_attempts)?;
    new.uploading = true;
    let id = Uuid::new_v4();
    // The job is committed first, not yet due; the chunks are committed
    // one by one as they arrive. One transaction around the whole upload
    // would hold a transaction id as long as the client takes to send, and
    // the outbox relay publishes nothing committed after the oldest running
    // transaction.
    let mut tx = state.pool.begin().await.map_err(ApiError::database)?;
    let submitted = queue::submit(&mut tx, id, &new).await.map_err(ApiError::database)?;
    tx.commit().await.map_err(ApiError::database)?;
    let job = match submitted {
        Submitted::Existing(job) => return repeated(job, &new),
        Submitted::New(job) => job,
    };
    match receive(&state, id, body, format, dry_run).await {
        Ok((params, lines)) => {
            let job = Job { params, progress: platform::jobs::Progress { total: Some(lines), phase: "queued".into(), ..job.progress }, ..job };
            Ok(accepted(job))
        }
        Err(e) => {
            if let Err(cleanup) = queue::abandon_upload(&state.pool, id).await {
                // The sweep of the workers deletes it later.
                tracing::warn!(job = %id, error = %cleanup, "cannot delete a refused upload now");
            }
            Err(e)
        }
    }
}

/// Stores the upload chunk by chunk, checking it on the way, and makes the
/// job due; its parameters and number of lines.
async fn receive(state: &AppState, id: Uuid, body: Body, format: ImportFormat, dry_run: bool) -> Result<(serde_json::Value, i64), ApiError> {
    let limits = &state.jobs;
    let mut conn = state.pool.acquire().await.map_err(ApiError::database)?;
    let mut file = Writer::new(id, "input", "application/octet-stream");
    let mut check = FileCheck::new(limits.max_line_bytes);
    let mut stream = body.into_data_stream();
    let mut reported = 0;
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|e| ApiError::invalid("body", format!("the upload broke off: {e}")))?;
        if file.bytes() as u64 + frame.len() as u64 > limits.max_upload_bytes {
            return Err(ApiError::PayloadTooLarge);
        }
        check.feed(&frame)?;
        file.write(&mut conn, &frame).await.map_err(ApiError::database)?;
        if file.bytes() - reported >= 16 << 20 {
            reported = file.bytes();
            queue::upload_alive(&state.pool, id).await.map_err(ApiError::database)?;
        }
    }
    let lines = check.finish()?;
    let bytes = file.bytes();
    let params = serde_json::to_value(ImportParams { format, dry_run, bytes, lines }).expect("parameters serialise");
    let mut tx = conn.begin().await.map_err(ApiError::database)?;
    file.finish(&mut tx).await.map_err(ApiError::database)?;
    if !queue::upload_done(&mut tx, id, &params, lines).await.map_err(ApiError::database)? {
        return Err(ApiError::JobStatus(platform::jobs::Status::Cancelled));
    }
    tx.commit().await.map_err(ApiError::database)?;
    Ok((params, lines))
}
fn import_format(param: Option<&str>, headers: &HeaderMap) -> Result<ImportFormat, ApiError> {
    match param {
        Some("csv") => return Ok(ImportFormat::Csv),
        Some("ndjson") => return Ok(ImportFormat::Ndjson),
        Some(_) => return Err(ApiError::bad_parameter("format", "csv or ndjson")),
        None => {}
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "text/csv" => Ok(ImportFormat::Csv),
        "application/x-ndjson" | "application/jsonl" | "application/ndjson" => Ok(ImportFormat::Ndjson),
        _ => Err(ApiError::bad_parameter("format", "csv or ndjson: give `format`, or send Content-Type text/csv or application/x-ndjson")),
    }
}

/// Checks an upload as it streams by: UTF-8 throughout, no line longer
/// than the limit, not empty; counts its lines.
struct FileCheck {
    max_line: usize,
    /// The bytes of a UTF-8 sequence split between two frames.
    carry: Vec<u8>,
    line: i64,
    line_bytes: usize,
    bytes: u64,
    last: Option<u8>,
}

impl FileCheck {
    fn new(max_line: usize) -> Self {
        Self { max_line, carry: Vec::new(), line: 1, line_bytes: 0, bytes: 0, last: None }
    }

    fn feed(&mut self, frame: &[u8]) -> Result<(), ApiError> {
        if self.bytes == 0 && (frame.starts_with(&[0xFF, 0xFE]) || frame.starts_with(&[0xFE, 0xFF])) {
            return Err(ApiError::invalid("body", "the file is UTF-16; save it as UTF-8"));
        }
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(frame);
        let valid = match std::str::from_utf8(&data) {
            Ok(_) => data.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => {
                let at = self.bytes + e.valid_up_to() as u64 - (data.len() - frame.len()) as u64;
                return Err(ApiError::invalid(
                    "body",
                    format!("the file is not UTF-8: line {}, byte {at} is not part of a UTF-8 character; save it as UTF-8", self.line_at(&data[..e.valid_up_to()])),
                ));
            }
        };
        self.carry = data[valid..].to_vec();
        for &b in frame {
            if b == b'\n' {
                self.line += 1;
                self.line_bytes = 0;
            } else {
                self.line_bytes += 1;
                if self.line_bytes > self.max_line {
                    return Err(ApiError::invalid(
                        "body",
                        format!("line {} is longer than {} bytes (APP_JOBS__MAX_LINE_BYTES)", self.line, self.max_line),
                    ));
                }
            }
        }
        self.bytes += frame.len() as u64;
        self.last = frame.last().copied().or(self.last);
        Ok(())
    }

    /// The line number at the end of `valid`, for an error message.
    fn line_at(&self, valid: &[u8]) -> i64 {
        self.line + valid.iter().filter(|b| **b == b'\n').count() as i64
    }

    /// The number of lines; refuses an empty file or one cut inside a character.
    fn finish(self) -> Result<i64, ApiError> {
        if !self.carry.is_empty() {
            return Err(ApiError::invalid("body", "the file is not UTF-8: it ends inside a character"));
        }
        if self.bytes == 0 {
            return Err(ApiError::invalid("body", "the file is empty"));
        }
        Ok(if self.last == Some(b'\n') { self.line - 1 } else { self.line })
    }
}

#[utoipa::path(
    post, path = "/jobs/reports", tag = "jobs", security(("bearer" = ["analyst", "admin"])),
    request_body = ReportParams,
    responses(SubmitResponses)
)]
pub(super) async fn report(
    State(state): State<AppState>,
    principal: axum::Extension<Arc<Principal>>,
    headers: HeaderMap,
    JsonBody(params): JsonBody<ReportParams>,
) -> Result<Response, ApiError> {
    params.check()?;
    submit_json(&state, &principal, &headers, params::REPORT, serde_json::to_value(&params).expect("serialises")).await
}

#[utoipa::path(
    post, path = "/jobs/selftest", tag = "jobs", security(("bearer" = ["admin"])),
    request_body = SelftestParams,
    responses(SubmitResponses)
)]
pub(super) async fn selftest(
    State(state): State<AppState>,
    principal: axum::Extension<Arc<Principal>>,
    headers: HeaderMap,
    JsonBody(params): JsonBody<SelftestParams>,
) -> Result<Response, ApiError> {
    params.check()?;
    submit_json(&state, &principal, &headers, params::SELFTEST, serde_json::to_value(&params).expect("serialises")).await
}

async fn submit_json(state: &AppState, principal: &Principal, headers: &HeaderMap, kind: &str, params: serde_json::Value) -> Result<Response, ApiError> {
    let new = new_job(principal, headers, kind, params, state.jobs.max_attempts)?;
    let mut tx = state.pool.begin().await.map_err(ApiError::database)?;
    let submitted = queue::submit(&mut tx, Uuid::new_v4(), &new).await.map_err(ApiError::database)?;
    tx.commit().await.map_err(ApiError::database)?;
    match submitted {
        Submitted::New(job) => Ok(accepted(job)),
        Submitted::Existing(job) => repeated(job, &new),
    }
}

fn new_job(principal: &Principal, headers: &HeaderMap, kind: &str, params: serde_json::Value, max_attempts: i32) -> Result<NewJob, ApiError> {
    let idempotency_key = match headers.get(&IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Some(k.to_owned()),
            _ => return Err(ApiError::invalid("Idempotency-Key", "must be 1 to 255 visible ASCII characters")),
        },
    };
    Ok(NewJob {
        kind: kind.to_owned(),
        params,
        max_attempts,
        submitter: principal.actor(),
        rights: Rights { roles: principal.roles.names().into_iter().map(str::to_owned).collect(), warehouses: principal.warehouses.clone() },
        idempotency_key,
        uploading: false,
        traceparent: Some(crate::routes::request_trace(headers)),
    })
}

/// The answer to a repeated submission: the first job, if it asked the same.
fn repeated(job: Job, new: &NewJob) -> Result<Response, ApiError> {
    let same = job.kind == new.kind
        && match new.kind.as_str() {
            // An upload's file is not compared (it is not read again): its format and mode are.
            params::IMPORT => job.params["format"] == new.params["format"] && job.params["dry_run"] == new.params["dry_run"],
            _ => job.params == new.params,
        };
    if !same {
        return Err(ApiError::invalid("Idempotency-Key", "was already used for a different submission; use a new key"));
    }
    let mut response = accepted(job);
    response.headers_mut().insert(crate::idempotency::key::REPLAYED, HeaderValue::from_static("true"));
    Ok(response)
}

fn accepted(job: Job) -> Response {
    let location = HeaderValue::from_str(&format!("/jobs/{}", job.id)).expect("a valid header");
    let mut response = (StatusCode::ACCEPTED, Json(job)).into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(frames: &[&[u8]], max_line: usize) -> Result<i64, String> {
        let mut c = FileCheck::new(max_line);
        for f in frames {
            c.feed(f).map_err(|e| e.to_string())?;
        }
        c.finish().map_err(|e| e.to_string())
    }

    #[test]
    fn lines_are_counted_with_or_without_a_final_newline() {
        assert_eq!(check(&[b"a\nb\n"], 10), Ok(2));
        assert_eq!(check(&[b"a\nb"], 10), Ok(2));
        assert_eq!(check(&[b"a\n", b"b\nc"], 10), Ok(3));
    }

    #[test]
    fn a_character_split_between_frames_is_utf8() {
        let text = "Schraube Ø8\n".as_bytes();
        let (a, b) = text.split_at(10);
        assert_eq!(check(&[a, b], 100), Ok(1));
    }

    #[test]
    fn latin1_utf16_empty_and_long_lines_are_refused_naming_what() {
        assert!(check(&[b"ok\nM\xfcller\n"], 100).unwrap_err().contains("line 2"));
        assert!(check(&[b"\xff\xfea\x00"], 100).unwrap_err().contains("UTF-16"));
        assert!(check(&[], 100).unwrap_err().contains("empty"));
        assert!(check(&[b"short\n", b"0123456789A\n"], 10).unwrap_err().contains("line 2 is longer than 10"));
    }
}
