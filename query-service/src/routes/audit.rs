//! `GET /audit`: who did what. Every event of the event store with its
//! actor (the verified principal that sent the command), newest first,
//! filtered by actor, article, charge, correlation id and time range, and
//! keyset-paginated; each filter is served by an index (see
//! [`readmodel::audit`]). Never cached: an audit answer is asked for rarely
//! and must be exact.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use events::{ArticleId, ChargeNo};
use readmodel::audit::{self, After, Entry, Filter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::param;
use crate::cache::FetchError;
use crate::cursor::{Page, PageParams, encode};
use super::params::QueryString;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_trail))
}

platform::parameters!(
    /// The audit query's filters.
    AuditQuery {
        "actor": super::params::ActorValue, Query, optional, "Only events of this actor, e.g. `api_key:scanner-7`";
        "article": events::ArticleId, Query, optional, "Only events of this article";
        "charge": events::ChargeNo, Query, optional, "Only events of this charge (needs `article`)";
        "correlation_id": super::params::ActorValue, Query, optional, "Only events of this business request";
        "from": super::params::MomentValue, Query, optional, "Recorded at or after (RFC 3339)";
        "to": super::params::MomentValue, Query, optional, "Recorded before (RFC 3339)";
    }
);

#[derive(Debug, Deserialize)]
struct AuditParams {
    actor: Option<String>,
    article: Option<String>,
    charge: Option<String>,
    correlation_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page of the audit trail.
#[derive(Debug, Serialize)]
struct AuditPage {
    items: Vec<Entry>,
    next_cursor: Option<String>,
}

/// The events of the event store with who sent them (`actor`, and its
/// CloudEvents `authtype`/`authid`), newest first; filters combine.
#[utoipa::path(
    get, path = "/audit", tag = "audit", security(("bearer" = ["analyst"]), ("bearer" = ["admin"])),
    params(AuditQuery, super::params::PageQuery),
    responses(
        (status = 200, description = "A page of the audit trail: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`", content_type = "application/problem+json"),
        (status = 503, description = "The event store cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn audit_trail(State(state): State<AppState>, QueryString(params): QueryString<AuditParams>) -> Result<Json<AuditPage>, ApiError> {
    let moment = |name: &str, raw: Option<String>| -> Result<Option<DateTime<Utc>>, ApiError> {
        raw.map(|raw| param(name, events::parse_moment(&raw))).transpose()
    };
    let text = |name: &str, raw: Option<String>| -> Result<Option<String>, ApiError> {
        match raw {
            Some(v) if v.is_empty() || v.len() > 200 => Err(ApiError::bad(name, "must be 1 to 200 characters long")),
            // PostgreSQL text holds no NUL, so no event's actor or correlation id does.
            Some(v) if v.contains('\0') => Err(ApiError::bad(name, "must not contain a NUL character")),
            other => Ok(other),
        }
    };
    let article = params.article.map(|a| param("article", ArticleId::parse(a))).transpose()?;
    let charge = params.charge.map(|c| param("charge", ChargeNo::parse(c))).transpose()?;
    if charge.is_some() && article.is_none() {
        return Err(ApiError::bad("charge", "a charge is a filter within an article: give `article` too"));
    }
    let filter = Filter {
        actor: text("actor", params.actor)?,
        article: article.map(String::from),
        charge: charge.map(String::from),
        correlation_id: text("correlation_id", params.correlation_id)?,
        from: moment("from", params.from)?,
        to: moment("to", params.to)?,
    };
    let page = Page::parse(&PageParams { limit: params.limit, cursor: params.cursor }, "audit", &state.pages)?;
    let after = match (page.key_str(0), page.key_str(1), page.key_i64(2)) {
        (Some(at), Some(stream_id), Some(sequence)) => Some(After {
            recorded_at: at.parse().map_err(|_| ApiError::bad("cursor", "is not a cursor of this list"))?,
            stream_id,
            sequence,
        }),
        _ => None,
    };
    let limit = i64::from(page.limit) + 1;
    let (filter, after) = (&filter, after.as_ref());
    let mut items = state
        .store
        .query("audit", |pool, _| async move { audit::page(&pool, filter, after, limit).await })
        .await
        .map_err(|e| match e {
            FetchError::Missing(_) => ApiError::NotFound("audit trail".into()),
            FetchError::Failed(cause) => ApiError::Unavailable(cause),
        })?;
    let more = items.len() > page.limit as usize;
    items.truncate(page.limit as usize);
    let next_cursor = more.then(|| items.last()).flatten().map(|e| {
        encode("audit", vec![json!(e.recorded_at.to_rfc3339()), json!(e.stream_id), json!(e.sequence)])
    });
    Ok(Json(AuditPage { items, next_cursor }))
}
