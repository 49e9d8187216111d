//! Read-your-writes: a request may carry the consistency token the
//! command-service returned (`article:ART-1@7`, header `X-Consistency-Token` or
//! query parameter `consistent_with`). The service waits, bounded, until the
//! projection has applied that position of that stream, then answers from
//! PostgreSQL, which the projector commits first, bypassing the caches. On
//! timeout: 504.

use std::time::{Duration, Instant};

use events::ArticleId;

use crate::error::ApiError;
use crate::state::AppState;

/// The header that carries a consistency token.
pub const HEADER: axum::http::HeaderName = axum::http::HeaderName::from_static("x-consistency-token");

/// A position to wait for: a stream and a sequence in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub stream: String,
    pub sequence: u64,
}

impl Token {
    /// Parses `article:{id}@{sequence}`; the error names what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (stream, sequence) = raw.rsplit_once('@').ok_or("expected {stream}@{sequence}")?;
        let id = stream.strip_prefix("article:").ok_or("the stream must be article:{id}")?;
        ArticleId::parse(id).map_err(|e| format!("article id {e}"))?;
        let digits = !sequence.is_empty() && sequence.len() <= 19 && sequence.bytes().all(|b| b.is_ascii_digit());
        let sequence = sequence.parse().ok().filter(|_| digits).ok_or("the sequence must be a non-negative integer of at most 19 digits")?;
        Ok(Self { stream: stream.to_owned(), sequence })
    }
}

/// The `consistent_with` query parameter.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Params {
    pub consistent_with: Option<String>,
}

/// Parses the query string only when there is one: most reads have none,
/// and deserialising an empty one still costs every request.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_none() {
            return Ok(Self::default());
        }
        Ok(axum::extract::Query::try_from_uri(&parts.uri).map(|axum::extract::Query(params)| params)?)
    }
}

/// The request's token, from the header or the `consistent_with` parameter.
pub fn token(header: Option<&axum::http::HeaderValue>, params: Params) -> Result<Option<Token>, ApiError> {
    let raw = header.and_then(|v| v.to_str().ok()).map(str::to_owned).or(params.consistent_with);
    raw.map(|raw| Token::parse(&raw).map_err(|reason| ApiError::BadParameter { field: "consistent_with".into(), reason }))
        .transpose()
}

/// Waits until the projection has applied `token`, or answers 504.
pub async fn wait(state: &AppState, token: &Token) -> Result<(), ApiError> {
    let deadline = Instant::now() + Duration::from_millis(state.consistency.max_wait_ms);
    loop {
        let applied = state.store.applied(&token.stream).await.map_err(|e| ApiError::Unavailable(e.into()))?;
        if applied >= token.sequence {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ApiError::NotYetConsistent { stream: token.stream.clone(), wanted: token.sequence, applied });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_an_article_stream_and_a_sequence() {
        assert_eq!(Token::parse("article:ART-1@7"), Ok(Token { stream: "article:ART-1".into(), sequence: 7 }));
        assert!(Token::parse("ART-1@7").is_err());
        assert!(Token::parse("article:ART-1").is_err());
        assert!(Token::parse("article:ART 1@7").is_err());
        assert!(Token::parse("article:ART-1@-1").is_err());
    }
}
