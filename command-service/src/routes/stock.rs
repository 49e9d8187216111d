//! Stock movements: `POST /stock/receipts`.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use events::{ArticleId, ChargeNo, Command, PostReceipt, Quantity, WarehouseId};
use serde::Deserialize;

use super::command_meta;
use crate::error::ApiError;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/stock/receipts", post(post_receipt))
}

/// Body of `POST /stock/receipts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    pub article: String,
    pub charge: String,
    pub warehouse: String,
    /// Whole base units of the article.
    pub quantity: i64,
    /// Business time of the receipt; now when absent.
    pub posted_at: Option<DateTime<Utc>>,
}

impl TryFrom<ReceiptRequest> for PostReceipt {
    type Error = ApiError;

    fn try_from(r: ReceiptRequest) -> Result<Self, ApiError> {
        Ok(PostReceipt {
            article: ArticleId::parse(r.article).map_err(|e| ApiError::invalid("article", e))?,
            charge: ChargeNo::parse(r.charge).map_err(|e| ApiError::invalid("charge", e))?,
            warehouse: WarehouseId::parse(r.warehouse).map_err(|e| ApiError::invalid("warehouse", e))?,
            quantity: Quantity::new(r.quantity).map_err(|e| ApiError::invalid("quantity", e))?,
            posted_at: r.posted_at.unwrap_or_else(Utc::now),
        })
    }
}

async fn post_receipt(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ReceiptRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(request) = body?;
    let command = Command::PostReceipt(request.try_into()?);
    let accepted = state.executor.execute(command, command_meta(&headers)).await?;
    Ok((StatusCode::CREATED, Json(accepted)))
}
