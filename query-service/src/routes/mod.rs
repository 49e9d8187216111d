//! The HTTP resources of the read API, one module each.

pub mod stock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::documents::StoredDocument;

/// Clients may reuse a document for a few seconds, then must revalidate (cheap: 304).
const CACHE_CONTROL: &str = "max-age=5, must-revalidate";

/// Answers with a stored document's bytes as they are, its version as `ETag`;
/// `304 Not Modified` without a body when `If-None-Match` names that version.
pub fn document_response(doc: StoredDocument, request: &HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", doc.version)).expect("a number is a valid header");
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = doc.body.into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    response
}
