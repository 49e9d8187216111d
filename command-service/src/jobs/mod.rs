//! `/jobs`: background jobs over HTTP (docs/jobs.md). Submitting answers
//! 202 with `Location: /jobs/{id}`; the job runs in a `worker` process.
//! Here: status with progress, the list, cancel, retry and discard (the
//! dead-job queue is `GET /jobs?status=dead`), Server-Sent Events of the
//! progress, and the downloads. A job is visible to the principal that
//! submitted it and to admins; to anyone else it does not exist (404).
//!
//! On the command-service because a job is a write client's or an
//! analyst's request like a command: the same credentials, roles, rate
//! limits and audit identity; the worker does the work.

pub mod params;
pub mod submit;
pub mod watch;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::auth::{Principal, Role};
use platform::jobs::queue::{self, Attempt, ChangeError, Filter};
use platform::jobs::{Job, Status};
use platform::problem::Problem;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit::import))
        .routes(routes!(submit::report))
        .routes(routes!(submit::selftest))
        .routes(routes!(list))
        .routes(routes!(get, discard))
        .routes(routes!(attempts))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(watch::events))
        .routes(routes!(watch::result))
        .routes(routes!(watch::rejections))
}

/// The answers about one job.
#[derive(Debug, utoipa::IntoResponses)]
pub enum JobResponses {
    /// The job.
    #[response(status = 200)]
    Found(Job),
    /// No such job (or not one of the caller's).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The job's status does not allow this (`status` says what it is).
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// A parameter is invalid.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// PostgreSQL cannot be reached.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The job `id` if the principal may see it: its submitter, or an admin.
pub(crate) async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> Result<Job, ApiError> {
    match queue::get(&state.pool, id).await.map_err(ApiError::database)? {
        Some(job) if job.submitter == principal.actor() || principal.roles.contains(Role::Admin) => Ok(job),
        _ => Err(ApiError::NotFoundJob(id)),
    }
}

fn principal(ext: &axum::Extension<Arc<Principal>>) -> &Principal {
    ext.0.as_ref()
}

/// A job id in a path; anything else is a 400 naming `id`.
pub(crate) fn job_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_parameter("id", "must be a UUID"))
}

#[utoipa::path(
    get, path = "/jobs/{id}", tag = "jobs", security(("bearer" = ["writer", "master-data", "analyst", "admin"])),
    params(("id" = String, Path, format = Uuid, description = "The job's id")),
    responses(JobResponses)
)]
async fn get(State(state): State<AppState>, p: axum::Extension<Arc<Principal>>, Path(id): Path<String>) -> Result<Json<Job>, ApiError> {
    Ok(Json(visible(&state, principal(&p), job_id(&id)?).await?))
}

/// The kinds of job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Import,
    Report,
    Selftest,
}

/// `GET /jobs` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs of this kind.
    #[param(value_type = Option<JobKind>)]
    kind: Option<String>,
    /// Only jobs in this status (`dead`: the dead-job queue).
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only jobs of this principal (admins; anyone else sees only their own).
    #[param(pattern = "^[^\\u0000]{1,300}$")]
    submitter: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    cursor: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/jobs", tag = "jobs", security(("bearer" = ["writer", "master-data", "analyst", "admin"])),
    params(ListQuery),
    responses(
        (status = 200, body = JobPage, description = "Jobs, newest first"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "A parameter is invalid (`field` names it)"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
async fn list(
    State(state): State<AppState>,
    p: axum::Extension<Arc<Principal>>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let query = query.map_err(|e| ApiError::bad_parameter("query", e.body_text()))?.0;
    let principal = principal(&p);
    if let Some(kind) = &query.kind
        && !params::KINDS.contains(&kind.as_str())
    {
        return Err(ApiError::bad_parameter("kind", format!("one of {}", params::KINDS.join(", "))));
    }
    let status = match &query.status {
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_parameter("status", "one of queued, running, succeeded, failed, cancelled, dead")
        })?),
        None => None,
    };
    if let Some(s) = &query.submitter
        && (s.is_empty() || s.len() > 300 || s.contains('\0'))
    {
        return Err(ApiError::bad_parameter("submitter", "1 to 300 characters, no NUL"));
    }
    let submitter = if principal.roles.contains(Role::Admin) { query.submitter.clone() } else { Some(principal.actor()) };
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_parameter("limit", "must be 1 to 500"));
    }
    let before = match &query.cursor {
        Some(c) => Some(decode_cursor(c).ok_or_else(|| ApiError::bad_parameter("cursor", "not a cursor this service handed out"))?),
        None => None,
    };
    let filter = Filter { kind: query.kind.clone(), status, submitter, before, limit };
    let jobs = queue::list(&state.pool, &filter).await.map_err(ApiError::database)?;
    let next_cursor = (jobs.len() as i64 == limit)
        .then(|| jobs.last().map(|j| format!("{}_{}", j.created_at.timestamp_micros(), j.id.simple())))
        .flatten();
    Ok(Json(JobPage { jobs, next_cursor }))
}

fn decode_cursor(c: &str) -> Option<(chrono::DateTime<chrono::Utc>, Uuid)> {
    let (micros, id) = c.split_once('_')?;
    Some((chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?, Uuid::parse_str(id).ok()?))
}

#[utoipa::path(
    get, path = "/jobs/{id}/attempts", tag = "jobs", security(("bearer" = ["writer", "master-data", "analyst", "admin"])),
    params(("id" = String, Path, format = Uuid, description = "The job's id")),
    responses(
        (status = 200, body = Vec<Attempt>, description = "Every attempt at the job, in order: when it ran, where, how it ended"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "`id` is not a UUID"),
        (status = 404, content_type = "application/problem+json", body = Problem, description = "No such job"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
async fn attempts(State(state): State<AppState>, p: axum::Extension<Arc<Principal>>, Path(id): Path<String>) -> Result<Json<Vec<Attempt>>, ApiError> {
    let job = visible(&state, principal(&p), job_id(&id)?).await?;
    Ok(Json(queue::attempts(&state.pool, job.id).await.map_err(ApiError::database)?))
}

#[utoipa::path(
    post, path = "/jobs/{id}/cancel", tag = "jobs", security(("bearer" = ["writer", "master-data", "analyst", "admin"])),
    params(("id" = String, Path, format = Uuid, description = "The job's id")),
    responses(JobResponses)
)]
async fn cancel(State(state): State<AppState>, p: axum::Extension<Arc<Principal>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = visible(&state, principal(&p), job_id(&id)?).await?;
    let job = queue::cancel(&state.pool, job.id).await.map_err(change_error)?;
    // A running job stops at its worker's next heartbeat: 202 until then.
    let status = if job.status == Status::Cancelled { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(job)).into_response())
}

#[utoipa::path(
    post, path = "/jobs/{id}/retry", tag = "jobs", security(("bearer" = ["writer", "master-data", "analyst", "admin"])),
    params(("id" = String, Path, format = Uuid, description = "The job's id")),
    responses(JobResponses)
)]
async fn retry(State(state): State<AppState>, p: axum::Extension<Arc<Principal>>, Path(id): Path<String>) -> Result<Json<Job>, ApiError> {
    let job = visible(&state, principal(&p), job_id(&id)?).await?;
    Ok(Json(queue::retry(&state.pool, job.id).await.map_err(change_error)?))
}

#[utoipa::path(
    delete, path = "/jobs/{id}", tag = "jobs", security(("bearer" = ["writer", "master-data", "analyst", "admin"])),
    params(("id" = String, Path, format = Uuid, description = "The job's id")),
    responses(
        (status = 204, description = "Discarded with its files"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "`id` is not a UUID"),
        (status = 404, content_type = "application/problem+json", body = Problem, description = "No such job"),
        (status = 409, content_type = "application/problem+json", body = Problem, description = "Queued or running: cancel it first"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
async fn discard(State(state): State<AppState>, p: axum::Extension<Arc<Principal>>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let job = visible(&state, principal(&p), job_id(&id)?).await?;
    queue::discard(&state.pool, job.id).await.map_err(change_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn change_error(e: ChangeError) -> ApiError {
    match e {
        ChangeError::NotFound => ApiError::NotFoundJob(Uuid::nil()),
        ChangeError::Status(status) => ApiError::JobStatus(status),
        ChangeError::Database(e) => ApiError::database(e),
    }
}
