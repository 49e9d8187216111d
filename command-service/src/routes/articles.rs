//! Articles: register, rename, change category, set the reorder point, discontinue.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use events::*;
use serde::Deserialize;

use super::{CommandContext, CommandResponses, JsonBody, execute, field, optional};
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(rename))
        .routes(routes!(change_category))
        .routes(routes!(set_reorder_point))
        .routes(routes!(discontinue))
}

/// Body of `POST /articles`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterArticleRequest {
    #[schema(schema_with = super::domain::<events::ArticleId>)]
    pub article: String,
    #[schema(schema_with = super::domain::<events::ArticleName>)]
    pub name: String,
    #[schema(schema_with = super::domain::<events::Category>)]
    pub category: String,
    pub unit: UnitRequest,
    /// Available stock below this is low stock; in base units.
    #[schema(schema_with = super::nullable::<events::Quantity>)]
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub reorder_point: Option<i64>,
}

/// An article's unit: `{"code": "kg", "decimals": 3}` counts grams.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitRequest {
    #[schema(schema_with = super::domain::<events::UnitCode>)]
    pub code: String,
    /// Decimal places of the base unit (0 to 6): 3 for kg counts grams.
    #[serde(default, deserialize_with = "super::whole::required")]
    #[schema(minimum = 0, maximum = 6)]
    pub decimals: u8,
}

impl TryFrom<RegisterArticleRequest> for RegisterArticle {
    type Error = ApiError;
    fn try_from(r: RegisterArticleRequest) -> Result<Self, ApiError> {
        Ok(RegisterArticle {
            article: field("article", ArticleId::parse(r.article))?,
            name: field("name", ArticleName::parse(r.name))?,
            category: field("category", Category::parse(r.category))?,
            unit: field("unit", Unit::new(&r.unit.code, r.unit.decimals))?,
            reorder_point: optional("reorder_point", r.reorder_point, Quantity::new)?,
        })
    }
}

pub(crate) fn article_id(raw: String) -> Result<ArticleId, ApiError> {
    field("article", ArticleId::parse(raw))
}

#[utoipa::path(
    post, path = "/articles", tag = "articles", security(("bearer" = ["master-data"])), request_body = RegisterArticleRequest,
    responses(CommandResponses)
)]
async fn register(
    State(state): State<AppState>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<RegisterArticleRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let command = Command::RegisterArticle(request.try_into()?);
    execute(&state, &ctx, command).await
}

/// Body of `PUT /articles/{article}/name`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    #[schema(schema_with = super::domain::<events::ArticleName>)]
    pub name: String,
}

#[utoipa::path(
    put, path = "/articles/{article}/name", tag = "articles", security(("bearer" = ["master-data"])), params(super::ArticlePath), request_body = RenameRequest,
    responses(CommandResponses)
)]
async fn rename(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<RenameRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let article = article_id(article)?;
    let name = field("name", ArticleName::parse(request.name))?;
    execute(&state, &ctx, Command::RenameArticle(RenameArticle { article, name })).await
}

/// Body of `PUT /articles/{article}/category`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryRequest {
    #[schema(schema_with = super::domain::<events::Category>)]
    pub category: String,
}

#[utoipa::path(
    put, path = "/articles/{article}/category", tag = "articles", security(("bearer" = ["master-data"])), params(super::ArticlePath), request_body = CategoryRequest,
    responses(CommandResponses)
)]
async fn change_category(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<CategoryRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let article = article_id(article)?;
    let category = field("category", Category::parse(request.category))?;
    execute(&state, &ctx, Command::ChangeArticleCategory(ChangeArticleCategory { article, category })).await
}

/// Body of `PUT /articles/{article}/reorder-point`; `null` removes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReorderPointRequest {
    /// In base units; `null` or absent clears it.
    #[schema(schema_with = super::nullable::<events::Quantity>)]
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub reorder_point: Option<i64>,
}

#[utoipa::path(
    put, path = "/articles/{article}/reorder-point", tag = "articles", security(("bearer" = ["master-data"])), params(super::ArticlePath), request_body = ReorderPointRequest,
    responses(CommandResponses)
)]
async fn set_reorder_point(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    JsonBody(request): JsonBody<ReorderPointRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let article = article_id(article)?;
    let reorder_point = optional("reorder_point", request.reorder_point, Quantity::new)?;
    execute(&state, &ctx, Command::SetReorderPoint(SetReorderPoint { article, reorder_point })).await
}

#[utoipa::path(
    post, path = "/articles/{article}/discontinue", tag = "articles", security(("bearer" = ["master-data"])), params(super::ArticlePath),
    responses(CommandResponses)
)]
async fn discontinue(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
) -> Result<impl IntoResponse, ApiError> {
    let article = article_id(article)?;
    execute(&state, &ctx, Command::DiscontinueArticle(DiscontinueArticle { article })).await
}
