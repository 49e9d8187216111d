//! The HTTP resources of the read API, one module each, and what they share:
//! serving an answer from the cache tiers, with ETag, `304`, Cache-Control and
//! the possibly-stale mark, and the read-your-writes path that bypasses the
//! caches.

pub mod articles;
pub mod audit;
pub mod categories;
pub mod exports;
pub mod charges;
pub mod params;
pub mod status;

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;

use crate::cache::{Entry, Fetch, FetchError};
use crate::consistency::{self, Token};
use crate::error::ApiError;
use crate::state::AppState;

/// The routes that serve stored documents as they are.
pub fn documents() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(articles::documents()).merge(categories::documents())
}

/// The routes that serve answers computed from rows (lists, charge detail, status).
pub fn lists() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(articles::lists())
        .merge(categories::lists())
        .merge(charges::router())
        .merge(status::router())
        .merge(audit::router())
        .merge(exports::router())
}

/// Clients may reuse an answer for a few seconds, then must revalidate (cheap: 304).
const CACHE_CONTROL: HeaderValue = HeaderValue::from_static("max-age=5, must-revalidate");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Set on an answer given while PostgreSQL is unreachable: it comes from a
/// cache and may miss the latest changes.
pub const POSSIBLY_STALE: HeaderName = HeaderName::from_static("x-possibly-stale");

/// The request headers a read looks at, taken without copying the others
/// (axum's `HeaderMap` extractor copies them all, on every request).
#[derive(Debug, Default)]
pub struct ReadHeaders {
    pub if_none_match: Option<HeaderValue>,
    pub consistency_token: Option<HeaderValue>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ReadHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let [if_none_match, consistency_token] =
            platform::http::first_values(&parts.headers, [&header::IF_NONE_MATCH, &consistency::HEADER]);
        Ok(Self { if_none_match, consistency_token })
    }
}

/// Answers with an entry's bytes as they are, its ETag and Cache-Control;
/// `304 Not Modified` without a body when `If-None-Match` names the ETag.
pub fn respond(entry: Entry, request: &ReadHeaders, stale: bool) -> Response {
    let etag = entry.etag();
    let unchanged = request.if_none_match.as_ref().is_some_and(|v| {
        v.as_bytes() == etag.as_bytes()
            || v.to_str().is_ok_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"))
    });
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = entry.body().clone().into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, JSON);
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, CACHE_CONTROL);
    if stale {
        headers.insert(POSSIBLY_STALE, HeaderValue::from_static("true"));
    }
    response
}

/// An answer from the tiers: memory, then `fetch` (Redis and/or PostgreSQL).
/// With a consistency token: waits for the projection, then `fresh` (PostgreSQL
/// only, never cached). `what` names the thing for a 404.
///
/// `fetch` and `fresh` make their futures only when called, and those are
/// boxed: an answer from memory never builds them, and the future of every
/// request stays small (it is moved into boxes on its way through the layers).
pub async fn serve<'a, F, Fut, G, GFut>(
    state: &'a AppState,
    request: &ReadHeaders,
    token: Option<Token>,
    key: &str,
    fetch: F,
    fresh: G,
    what: impl FnOnce() -> String,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Entry, FetchError>> + Send + 'a,
    G: FnOnce() -> GFut,
    GFut: Future<Output = Result<Entry, FetchError>> + Send + 'a,
{
    let answer = match token {
        Some(token) => {
            Box::pin(consistency::wait(state, &token)).await?;
            let fresh: Fetch<'a> = Box::pin(fresh());
            fresh.await.map_err(Arc::new)
        }
        None => state.cache.get(key, || -> Fetch<'a> { Box::pin(fetch()) }).await,
    };
    match answer {
        Ok(entry) => Ok(respond(entry, request, !state.store.postgres_up())),
        Err(e) => Err(match &*e {
            FetchError::Missing(_) => ApiError::NotFound(what()),
            FetchError::Failed(cause) => ApiError::Unavailable(anyhow::anyhow!("{cause:#}")),
        }),
    }
}

/// For lists, which are never read fresh (they take no consistency token).
pub fn no_fresh() -> std::future::Pending<Result<Entry, FetchError>> {
    std::future::pending()
}

/// Parses a path or query parameter with the domain's own validation, naming it on error.
pub fn param<T, E: std::fmt::Display>(name: &str, parsed: Result<T, E>) -> Result<T, ApiError> {
    parsed.map_err(|e| ApiError::bad(name, e.to_string()))
}

/// The tags of an answer.
pub fn tags(tags: &[String]) -> Arc<[String]> {
    tags.iter().cloned().collect()
}

/// A page of a list as JSON: the items and the cursor of the next page
/// (`null` on the last one). `items` holds up to `limit + 1` rows: one more
/// than asked shows there is a next page.
pub fn page_body<T: serde::Serialize>(mut items: Vec<T>, limit: u32, next: impl Fn(&T) -> String) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Page<T> {
        items: Vec<T>,
        next_cursor: Option<String>,
    }
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(next) } else { None };
    // A struct, not `json!`: the items keep their fields in declaration order.
    serde_json::to_vec(&Page { items, next_cursor }).expect("a page serialises")
}
