//! Reservations of part of a charge in a warehouse: reserve, release, consume.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use chrono::{DateTime, Utc};
use events::*;
use serde::Deserialize;

use super::articles::article_id;
use super::{CommandContext, CommandResponses, JsonBody, execute, field, optional};
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(reserve)).routes(routes!(release)).routes(routes!(consume))
}

/// Body of `POST /articles/{article}/reservations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Chosen by the client (e.g. the order line); generated when absent.
    #[schema(schema_with = super::nullable::<events::ReservationId>)]
    pub reservation: Option<String>,
    #[schema(schema_with = super::domain::<events::ChargeNo>)]
    pub charge: String,
    #[schema(schema_with = super::domain::<events::WarehouseId>)]
    pub warehouse: String,
    #[schema(schema_with = super::domain::<events::Quantity>)]
    #[serde(deserialize_with = "super::whole::required")]
    pub quantity: i64,
    /// What the stock is reserved for, e.g. an order number.
    #[schema(schema_with = super::domain::<events::Text>)]
    pub reference: String,
}

#[utoipa::path(
    post, path = "/articles/{article}/reservations", tag = "reservations", security(("bearer" = ["writer"])), params(super::ArticlePath), request_body = ReserveRequest,
    responses(CommandResponses)
)]
async fn reserve(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<ReserveRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let r = request;
    let reservation = match r.reservation {
        Some(id) => field("reservation", ReservationId::parse(id))?,
        None => ReservationId::parse(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid id"),
    };
    let command = Command::ReserveStock(ReserveStock {
        article: article_id(article)?,
        reservation,
        charge: field("charge", ChargeNo::parse(r.charge))?,
        warehouse: field("warehouse", WarehouseId::parse(r.warehouse))?,
        quantity: field("quantity", Quantity::new(r.quantity))?,
        reference: field("reference", Text::parse(r.reference))?,
    });
    execute(&state, &ctx, command).await
}

fn ids(article: String, reservation: String) -> Result<(ArticleId, ReservationId), ApiError> {
    Ok((article_id(article)?, field("reservation", ReservationId::parse(reservation))?))
}

/// Body of `.../release`: all of what is left when `quantity` is absent. A
/// release is not a stock movement and has no posting time.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    #[schema(schema_with = super::nullable::<events::Quantity>)]
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub quantity: Option<i64>,
}

/// Body of `.../consume`: all of what is left when `quantity` is absent.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeRequest {
    #[schema(schema_with = super::nullable::<events::Quantity>)]
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub quantity: Option<i64>,
    /// Business time of the consumption; now when absent.
    pub posted_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post, path = "/articles/{article}/reservations/{reservation}/release", tag = "reservations", security(("bearer" = ["writer"])), params(super::ReservationPath), request_body = ReleaseRequest,
    responses(CommandResponses)
)]
async fn release(
    State(state): State<AppState>,
    Path((article, reservation)): Path<(String, String)>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<ReleaseRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (article, reservation) = ids(article, reservation)?;
    let r = request;
    let quantity = optional("quantity", r.quantity, Quantity::new)?;
    execute(&state, &ctx, Command::ReleaseReservation(ReleaseReservation { article, reservation, quantity })).await
}

#[utoipa::path(
    post, path = "/articles/{article}/reservations/{reservation}/consume", tag = "reservations", security(("bearer" = ["writer"])), params(super::ReservationPath), request_body = ConsumeRequest,
    responses(CommandResponses)
)]
async fn consume(
    State(state): State<AppState>,
    Path((article, reservation)): Path<(String, String)>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<ConsumeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (article, reservation) = ids(article, reservation)?;
    let r = request;
    let quantity = optional("quantity", r.quantity, Quantity::new)?;
    let command = Command::ConsumeReservation(ConsumeReservation { article, reservation, quantity, posted_at: r.posted_at });
    execute(&state, &ctx, command).await
}
