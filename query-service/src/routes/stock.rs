//! `GET /articles/{article}/stock`: on hand, reserved and available of one
//! article, per warehouse and per charge.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use events::ArticleId;

use super::document_response;
use crate::cache::FetchError;
use crate::consistency;
use crate::error::ApiError;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/articles/{article}/stock", get(article_stock))
}

async fn article_stock(
    State(state): State<AppState>,
    Path(article): Path<String>,
    headers: HeaderMap,
    Query(params): Query<consistency::Params>,
) -> Result<Response, ApiError> {
    let article = ArticleId::parse(article)
        .map_err(|e| ApiError::BadParameter { field: "article".into(), reason: e.to_string() })?;
    let key = format!("stock:{article}");
    let fetched = match consistency::token(&headers, params)? {
        Some(token) => {
            consistency::wait(&state, &token).await?;
            state.documents.get_fresh(&key).await.map_err(std::sync::Arc::new)
        }
        None => state.cache.get(&key, state.documents.get(&key)).await,
    };
    match fetched {
        Ok(doc) => Ok(document_response(doc, &headers)),
        Err(e) => match &*e {
            FetchError::Missing => Err(ApiError::NotFound(format!("stock of article {article}"))),
            FetchError::Failed(cause) => Err(ApiError::Unavailable(anyhow::anyhow!("{cause:#}"))),
        },
    }
}
