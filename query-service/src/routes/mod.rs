//! The HTTP resources of the read API, one module each.

pub mod stock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::documents::StoredDocument;

/// Answers with a stored document's bytes, as they are.
pub fn document_response(doc: StoredDocument) -> Response {
    let mut response = doc.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", doc.version)).expect("a number is a valid header"),
    );
    response
}
