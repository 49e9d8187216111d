//! Reservations of part of a charge in a warehouse: reserve, release, consume.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use chrono::{DateTime, Utc};
use events::*;
use serde::Deserialize;

use super::articles::article_id;
use super::{CommandContext, CommandResponses, body, execute, field, optional};
use crate::error::ApiError;
use crate::startup::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(reserve)).routes(routes!(release)).routes(routes!(consume))
}

/// Body of `POST /articles/{article}/reservations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Chosen by the client (e.g. the order line); generated when absent.
    pub reservation: Option<String>,
    pub charge: String,
    pub warehouse: String,
    pub quantity: i64,
    /// What the stock is reserved for, e.g. an order number.
    pub reference: String,
}

#[utoipa::path(
    post, path = "/articles/{article}/reservations", tag = "reservations", params(("article" = String, Path, description = "Article id, e.g. ART-1000")), request_body = ReserveRequest,
    responses(CommandResponses)
)]
async fn reserve(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    request: Result<Json<ReserveRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let r = body(request)?;
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

/// Body of `.../release` and `.../consume`; all of what is left when `quantity` is absent.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartRequest {
    pub quantity: Option<i64>,
    /// Business time of a consumption; now when absent.
    pub posted_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post, path = "/articles/{article}/reservations/{reservation}/release", tag = "reservations", params(("article" = String, Path, description = "Article id, e.g. ART-1000"), ("reservation" = String, Path, description = "Reservation id")), request_body = PartRequest,
    responses(CommandResponses)
)]
async fn release(
    State(state): State<AppState>,
    Path((article, reservation)): Path<(String, String)>,
    ctx: CommandContext,
    request: Result<Json<PartRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (article, reservation) = ids(article, reservation)?;
    let r = body(request)?;
    if r.posted_at.is_some() {
        return Err(ApiError::invalid("posted_at", "a release is not a stock movement and has no posting time"));
    }
    let quantity = optional("quantity", r.quantity, Quantity::new)?;
    execute(&state, &ctx, Command::ReleaseReservation(ReleaseReservation { article, reservation, quantity })).await
}

#[utoipa::path(
    post, path = "/articles/{article}/reservations/{reservation}/consume", tag = "reservations", params(("article" = String, Path, description = "Article id, e.g. ART-1000"), ("reservation" = String, Path, description = "Reservation id")), request_body = PartRequest,
    responses(CommandResponses)
)]
async fn consume(
    State(state): State<AppState>,
    Path((article, reservation)): Path<(String, String)>,
    ctx: CommandContext,
    request: Result<Json<PartRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (article, reservation) = ids(article, reservation)?;
    let r = body(request)?;
    let quantity = optional("quantity", r.quantity, Quantity::new)?;
    let command = Command::ConsumeReservation(ConsumeReservation { article, reservation, quantity, posted_at: r.posted_at });
    execute(&state, &ctx, command).await
}
