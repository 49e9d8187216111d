//! Charges (lots) of an article: register, record quality results, block, release.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use chrono::NaiveDate;
use events::*;
use serde::Deserialize;

use super::articles::article_id;
use super::{CommandContext, CommandResponses, JsonBody, execute, field, optional};
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(record_quality))
        .routes(routes!(block))
        .routes(routes!(release))
}

fn ids(article: String, charge: String) -> Result<(ArticleId, ChargeNo), ApiError> {
    Ok((article_id(article)?, field("charge", ChargeNo::parse(charge))?))
}

/// Body of `POST /articles/{article}/charges`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterChargeRequest {
    #[schema(schema_with = super::domain::<events::ChargeNo>)]
    pub charge: String,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    /// `pending` (default), `approved` or `rejected`.
    #[schema(schema_with = super::nullable::<events::QualityStatus>)]
    pub quality_status: Option<QualityStatus>,
}

#[utoipa::path(
    post, path = "/articles/{article}/charges", tag = "charges", security(("bearer" = ["master-data"])), params(super::ArticlePath), request_body = RegisterChargeRequest,
    responses(CommandResponses)
)]
async fn register(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<RegisterChargeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let r = request;
    let command = Command::RegisterCharge(RegisterCharge {
        article: article_id(article)?,
        charge: field("charge", ChargeNo::parse(r.charge))?,
        production_date: r.production_date,
        expiry_date: r.expiry_date,
        quality_status: r.quality_status.unwrap_or(QualityStatus::Pending),
    });
    execute(&state, &ctx, command).await
}

/// Body of `POST .../quality-results`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityResultRequest {
    #[schema(min_items = 1)]
    pub measurements: Vec<MeasurementRequest>,
    /// The charge's status after this analysis (`pending`, `approved`, `rejected`); unchanged when absent.
    #[schema(schema_with = super::nullable::<events::QualityStatus>)]
    pub quality_status: Option<QualityStatus>,
}

/// One measurement: `{"name": "moisture", "value": "12.5", "unit": "%"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeasurementRequest {
    #[schema(schema_with = super::domain::<events::Text>)]
    pub name: String,
    /// A decimal number as a string, kept exactly.
    #[schema(schema_with = super::domain::<events::DecimalValue>)]
    pub value: String,
    #[schema(schema_with = super::nullable::<events::Text>)]
    pub unit: Option<String>,
}

#[utoipa::path(
    post, path = "/articles/{article}/charges/{charge}/quality-results", tag = "charges", security(("bearer" = ["master-data"])), params(super::ChargePath), request_body = QualityResultRequest,
    responses(CommandResponses)
)]
async fn record_quality(
    State(state): State<AppState>,
    Path((article, charge)): Path<(String, String)>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<QualityResultRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (article, charge) = ids(article, charge)?;
    let r = request;
    let measurements = r
        .measurements
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(Measurement {
                name: field(&format!("measurements[{i}].name"), Text::parse(m.name))?,
                value: field(&format!("measurements[{i}].value"), DecimalValue::parse(&m.value))?,
                unit: optional(&format!("measurements[{i}].unit"), m.unit, Text::parse)?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let command = Command::RecordQualityResult(RecordQualityResult {
        article,
        charge,
        measurements,
        quality_status: r.quality_status,
    });
    execute(&state, &ctx, command).await
}

/// Body of `POST .../block`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    #[schema(schema_with = super::domain::<events::Text>)]
    pub reason: String,
}

#[utoipa::path(
    post, path = "/articles/{article}/charges/{charge}/block", tag = "charges", security(("bearer" = ["master-data"])), params(super::ChargePath), request_body = BlockRequest,
    responses(CommandResponses)
)]
async fn block(
    State(state): State<AppState>,
    Path((article, charge)): Path<(String, String)>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<BlockRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (article, charge) = ids(article, charge)?;
    let reason = field("reason", Text::parse(request.reason))?;
    execute(&state, &ctx, Command::BlockCharge(BlockCharge { article, charge, reason })).await
}

#[utoipa::path(
    post, path = "/articles/{article}/charges/{charge}/release", tag = "charges", security(("bearer" = ["master-data"])), params(super::ChargePath),
    responses(CommandResponses)
)]
async fn release(
    State(state): State<AppState>,
    Path((article, charge)): Path<(String, String)>,
    ctx: CommandContext,
) -> Result<impl IntoResponse, ApiError> {
    let (article, charge) = ids(article, charge)?;
    execute(&state, &ctx, Command::ReleaseCharge(ReleaseCharge { article, charge })).await
}
