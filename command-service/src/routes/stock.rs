//! Stock movements: receipts, issues, transfers and inventory counts.

use axum::extract::State;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use chrono::{DateTime, Utc};
use events::*;
use serde::Deserialize;

use super::{CommandContext, CommandResponses, JsonBody, execute, field};
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receipt))
        .routes(routes!(issue))
        .routes(routes!(transfer))
        .routes(routes!(count))
}

/// Body of `POST /stock/receipts` and `POST /stock/issues`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MovementRequest {
    #[schema(schema_with = super::domain::<events::ArticleId>)]
    pub article: String,
    #[schema(schema_with = super::domain::<events::ChargeNo>)]
    pub charge: String,
    #[schema(schema_with = super::domain::<events::WarehouseId>)]
    pub warehouse: String,
    /// Whole base units of the article.
    #[schema(schema_with = super::domain::<events::Quantity>)]
    #[serde(deserialize_with = "super::whole::required")]
    pub quantity: i64,
    /// Business time; now when absent. At most 30 days back.
    pub posted_at: Option<DateTime<Utc>>,
}

/// A receipt or an issue, checked.
pub(crate) struct Movement {
    article: ArticleId,
    charge: ChargeNo,
    warehouse: WarehouseId,
    quantity: Quantity,
    posted_at: Option<DateTime<Utc>>,
}

impl Movement {
    pub(crate) fn receipt(self) -> Command {
        Command::PostReceipt(PostReceipt {
            article: self.article,
            charge: self.charge,
            warehouse: self.warehouse,
            quantity: self.quantity,
            posted_at: self.posted_at,
        })
    }

    pub(crate) fn issue(self) -> Command {
        Command::PostIssue(PostIssue {
            article: self.article,
            charge: self.charge,
            warehouse: self.warehouse,
            quantity: self.quantity,
            posted_at: self.posted_at,
        })
    }
}

impl TryFrom<MovementRequest> for Movement {
    type Error = ApiError;
    fn try_from(r: MovementRequest) -> Result<Self, ApiError> {
        Ok(Movement {
            article: field("article", ArticleId::parse(r.article))?,
            charge: field("charge", ChargeNo::parse(r.charge))?,
            warehouse: field("warehouse", WarehouseId::parse(r.warehouse))?,
            quantity: field("quantity", Quantity::new(r.quantity))?,
            posted_at: r.posted_at,
        })
    }
}

#[utoipa::path(
    post, path = "/stock/receipts", tag = "stock", security(("bearer" = ["writer"])), request_body = MovementRequest,
    responses(CommandResponses)
)]
async fn receipt(
    State(state): State<AppState>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<MovementRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let m: Movement = request.try_into()?;
    execute(&state, &ctx, m.receipt()).await
}

#[utoipa::path(
    post, path = "/stock/issues", tag = "stock", security(("bearer" = ["writer"])), request_body = MovementRequest,
    responses(CommandResponses)
)]
async fn issue(
    State(state): State<AppState>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<MovementRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let m: Movement = request.try_into()?;
    execute(&state, &ctx, m.issue()).await
}

/// Body of `POST /stock/transfers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    #[schema(schema_with = super::domain::<events::ArticleId>)]
    pub article: String,
    #[schema(schema_with = super::domain::<events::ChargeNo>)]
    pub charge: String,
    #[schema(schema_with = super::domain::<events::WarehouseId>)]
    pub from: String,
    #[schema(schema_with = super::domain::<events::WarehouseId>)]
    pub to: String,
    #[schema(schema_with = super::domain::<events::Quantity>)]
    #[serde(deserialize_with = "super::whole::required")]
    pub quantity: i64,
    pub posted_at: Option<DateTime<Utc>>,
}

impl TryFrom<TransferRequest> for TransferStock {
    type Error = ApiError;
    fn try_from(r: TransferRequest) -> Result<Self, ApiError> {
        Ok(TransferStock {
            article: field("article", ArticleId::parse(r.article))?,
            charge: field("charge", ChargeNo::parse(r.charge))?,
            from: field("from", WarehouseId::parse(r.from))?,
            to: field("to", WarehouseId::parse(r.to))?,
            quantity: field("quantity", Quantity::new(r.quantity))?,
            posted_at: r.posted_at,
        })
    }
}

#[utoipa::path(
    post, path = "/stock/transfers", tag = "stock", security(("bearer" = ["writer"])), request_body = TransferRequest,
    responses(CommandResponses)
)]
async fn transfer(
    State(state): State<AppState>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<TransferRequest>,
) -> Result<impl IntoResponse, ApiError> {
    execute(&state, &ctx, Command::TransferStock(request.try_into()?)).await
}

/// Body of `POST /stock/inventory-counts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountRequest {
    #[schema(schema_with = super::domain::<events::ArticleId>)]
    pub article: String,
    #[schema(schema_with = super::domain::<events::ChargeNo>)]
    pub charge: String,
    #[schema(schema_with = super::domain::<events::WarehouseId>)]
    pub warehouse: String,
    /// The counted quantity (0 or more).
    #[schema(schema_with = super::domain::<events::Counted>)]
    #[serde(deserialize_with = "super::whole::required")]
    pub counted: i64,
    pub posted_at: Option<DateTime<Utc>>,
}

impl TryFrom<CountRequest> for CountInventory {
    type Error = ApiError;
    fn try_from(r: CountRequest) -> Result<Self, ApiError> {
        Ok(CountInventory {
            article: field("article", ArticleId::parse(r.article))?,
            charge: field("charge", ChargeNo::parse(r.charge))?,
            warehouse: field("warehouse", WarehouseId::parse(r.warehouse))?,
            counted: field("counted", Counted::new(r.counted))?,
            posted_at: r.posted_at,
        })
    }
}

#[utoipa::path(
    post, path = "/stock/inventory-counts", tag = "stock", security(("bearer" = ["writer"])), request_body = CountRequest,
    responses(CommandResponses)
)]
async fn count(
    State(state): State<AppState>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<CountRequest>,
) -> Result<impl IntoResponse, ApiError> {
    execute(&state, &ctx, Command::CountInventory(request.try_into()?)).await
}
