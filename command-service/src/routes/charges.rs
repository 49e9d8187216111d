//! Charges (lots) of an article: register, record quality results, block, release.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use chrono::NaiveDate;
use events::*;
use serde::Deserialize;

use super::articles::article_id;
use super::{CommandContext, CommandResponses, body, execute, field, optional};
use crate::error::ApiError;
use crate::startup::AppState;

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
    pub charge: String,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    /// `pending` (default), `approved` or `rejected`.
    #[schema(value_type = Option<String>, example = "approved")]
    pub quality_status: Option<QualityStatus>,
}

#[utoipa::path(
    post, path = "/articles/{article}/charges", tag = "charges", params(("article" = String, Path, description = "Article id, e.g. ART-1000")), request_body = RegisterChargeRequest,
    responses(CommandResponses)
)]
async fn register(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    request: Result<Json<RegisterChargeRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let r = body(request)?;
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
    pub measurements: Vec<MeasurementRequest>,
    /// The charge's status after this analysis (`pending`, `approved`, `rejected`); unchanged when absent.
    #[schema(value_type = Option<String>)]
    pub quality_status: Option<QualityStatus>,
}

/// One measurement: `{"name": "moisture", "value": "12.5", "unit": "%"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeasurementRequest {
    pub name: String,
    /// A decimal number as a string, kept exactly.
    pub value: String,
    pub unit: Option<String>,
}

#[utoipa::path(
    post, path = "/articles/{article}/charges/{charge}/quality-results", tag = "charges", params(("article" = String, Path, description = "Article id, e.g. ART-1000"), ("charge" = String, Path, description = "Charge number within the article")), request_body = QualityResultRequest,
    responses(CommandResponses)
)]
async fn record_quality(
    State(state): State<AppState>,
    Path((article, charge)): Path<(String, String)>,
    ctx: CommandContext,
    request: Result<Json<QualityResultRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (article, charge) = ids(article, charge)?;
    let r = body(request)?;
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
    pub reason: String,
}

#[utoipa::path(
    post, path = "/articles/{article}/charges/{charge}/block", tag = "charges", params(("article" = String, Path, description = "Article id, e.g. ART-1000"), ("charge" = String, Path, description = "Charge number within the article")), request_body = BlockRequest,
    responses(CommandResponses)
)]
async fn block(
    State(state): State<AppState>,
    Path((article, charge)): Path<(String, String)>,
    ctx: CommandContext,
    request: Result<Json<BlockRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (article, charge) = ids(article, charge)?;
    let reason = field("reason", Text::parse(body(request)?.reason))?;
    execute(&state, &ctx, Command::BlockCharge(BlockCharge { article, charge, reason })).await
}

#[utoipa::path(
    post, path = "/articles/{article}/charges/{charge}/release", tag = "charges", params(("article" = String, Path, description = "Article id, e.g. ART-1000"), ("charge" = String, Path, description = "Charge number within the article")),
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
