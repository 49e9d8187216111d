//! Following a job: `GET /jobs/{id}/events` (Server-Sent Events: the job
//! each time its progress or status changes, until it is final), and the
//! downloads: `GET /jobs/{id}/result` (the report file, streamed chunk by
//! chunk) and `GET /jobs/{id}/rejections` (an import's refused lines as
//! CSV, streamed page by page).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use platform::auth::Principal;
use platform::jobs::{files, queue};
use platform::problem::Problem;

use super::{job_id, visible};
use crate::error::ApiError;
use crate::state::AppState;

/// How often the event stream looks at the job.
const POLL: Duration = Duration::from_millis(250);

/// One event of `GET /jobs/{id}/events`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct JobEvent {
    /// `progress` (the job changed), `finished` (the job is final; the
    /// stream ends) or `wait` (the stream's `wait` ran out first; reconnect).
    #[schema(pattern = "^(progress|finished|wait)$")]
    pub event: String,
    /// The job as JSON (as `GET /jobs/{id}` answers).
    pub data: String,
}

/// `GET /jobs/{id}/events` parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// End the stream after this many seconds (default 300) with an event
    /// `wait` if the job is not final by then; an `EventSource` reconnects.
    #[param(minimum = 1, maximum = 3600)]
    wait: Option<u64>,
}

#[utoipa::path(
    get, path = "/jobs/{id}/events", tag = "jobs", security(("bearer" = ["writer", "master-data", "analyst", "admin"])),
    params(("id" = String, Path, format = Uuid, description = "The job's id"), EventsQuery),
    responses(
        (status = 200, content_type = "text/event-stream", body = JobEvent,
         description = "Server-Sent Events (the schema is one event's): `progress` with the job (JSON) whenever its status or \
                        progress changes, then `finished` with the final job, and the stream ends"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "`id` is not a UUID"),
        (status = 404, content_type = "application/problem+json", body = Problem, description = "No such job"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
pub(super) async fn events(
    State(state): State<AppState>,
    principal: axum::Extension<Arc<Principal>>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let wait = query.map_err(|e| ApiError::bad_parameter("wait", e.body_text()))?.0.wait.unwrap_or(300);
    if !(1..=3600).contains(&wait) {
        return Err(ApiError::bad_parameter("wait", "must be 1 to 3600"));
    }
    let job = visible(&state, &principal, job_id(&id)?).await?;
    let pool = state.pool.clone();
    let id = job.id;
    let until = tokio::time::Instant::now() + Duration::from_secs(wait);
    // (the job to send, the last one sent, done)
    let stream = futures::stream::unfold((Some(job), None::<String>, false), move |(next, last, done)| {
        let pool = pool.clone();
        async move {
            if done {
                return None;
            }
            let mut next = next;
            loop {
                let job = match next.take() {
                    Some(job) => job,
                    None => {
                        if tokio::time::Instant::now() + POLL > until {
                            let event = Event::default().event("wait").data(last.clone().unwrap_or_default());
                            return Some((Ok(event), (None, last, true)));
                        }
                        tokio::time::sleep(POLL).await;
                        match queue::get(&pool, id).await {
                            Ok(Some(job)) => job,
                            // Discarded meanwhile, or the database is gone: end the stream.
                            Ok(None) | Err(_) => return None,
                        }
                    }
                };
                let json = serde_json::to_string(&job).expect("a job serialises");
                let fin = job.status.is_final();
                let changed = last.as_deref().is_none_or(|l| l != json);
                if changed || fin {
                    let event = Event::default().event(if fin { "finished" } else { "progress" }).data(json.clone());
                    return Some((Ok(event), (None, Some(json), fin)));
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[utoipa::path(
    get, path = "/jobs/{id}/result", tag = "jobs", security(("bearer" = ["writer", "master-data", "analyst", "admin"])),
    params(("id" = String, Path, format = Uuid, description = "The job's id")),
    responses(
        (status = 200, content_type = "application/octet-stream", body = String,
         description = "The job's file (a report as CSV, XLSX or NDJSON), with its own Content-Type and a file name"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "`id` is not a UUID"),
        (status = 404, content_type = "application/problem+json", body = Problem, description = "No such job, or it has no file (yet)"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
pub(super) async fn result(
    State(state): State<AppState>,
    principal: axum::Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = visible(&state, &principal, job_id(&id)?).await?;
    let Some(file) = files::meta(&state.pool, job.id, "result").await.map_err(ApiError::database)? else {
        return Err(ApiError::NoFile(job.id));
    };
    let name = job.result.as_ref().and_then(|r| r["file"].as_str()).unwrap_or("result").to_owned();
    let content_type = HeaderValue::from_str(&file.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let body = Body::from_stream(files::read(state.pool.clone(), job.id, file.clone(), 0));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.bytes as u64));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[utoipa::path(
    get, path = "/jobs/{id}/rejections", tag = "jobs", security(("bearer" = ["writer", "master-data", "analyst", "admin"])),
    params(("id" = String, Path, format = Uuid, description = "The job's id")),
    responses(
        (status = 200, content_type = "text/csv", body = String,
         description = "The refused lines of an import so far: `line,problem,field,detail`, in line order"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "`id` is not a UUID"),
        (status = 404, content_type = "application/problem+json", body = Problem, description = "No such job"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
pub(super) async fn rejections(
    State(state): State<AppState>,
    principal: axum::Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = visible(&state, &principal, job_id(&id)?).await?;
    const PAGE: i64 = 10_000;
    let pool = state.pool.clone();
    let mut header = Vec::new();
    platform::csv::line(&mut header, ["line", "problem", "field", "detail"].into_iter());
    let pages = futures::stream::unfold(Some(0i64), move |after| {
        let pool = pool.clone();
        async move {
            let after = after?;
            match queue::rejections(&pool, job.id, after, PAGE).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let next = (rows.len() as i64 == PAGE).then(|| rows.last().map(|r| r.line)).flatten();
                    let mut out = Vec::new();
                    for r in &rows {
                        let line = r.line.to_string();
                        platform::csv::line(&mut out, [line.as_str(), &r.problem, r.field.as_deref().unwrap_or(""), &r.detail].into_iter());
                    }
                    Some((Ok::<_, sqlx::Error>(Bytes::from(out)), next))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    let body = futures::stream::once(async move { Ok(Bytes::from(header)) }).chain(pages);
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    Ok(response)
}
