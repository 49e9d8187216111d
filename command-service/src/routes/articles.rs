//! Articles: register, rename, change category, set the reorder point, discontinue.

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{post, put};
use axum::Json;
use events::*;
use serde::Deserialize;

use super::{CommandContext, body, execute, field, optional};
use crate::error::ApiError;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/articles", post(register))
        .route("/articles/{article}/name", put(rename))
        .route("/articles/{article}/category", put(change_category))
        .route("/articles/{article}/reorder-point", put(set_reorder_point))
        .route("/articles/{article}/discontinue", post(discontinue))
}

/// Body of `POST /articles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterArticleRequest {
    pub article: String,
    pub name: String,
    pub category: String,
    pub unit: UnitRequest,
    /// Available stock below this is low stock; in base units.
    pub reorder_point: Option<i64>,
}

/// An article's unit: `{"code": "kg", "decimals": 3}` counts grams.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitRequest {
    pub code: String,
    #[serde(default)]
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

async fn register(
    State(state): State<AppState>,
    ctx: CommandContext,
    request: Result<Json<RegisterArticleRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let command = Command::RegisterArticle(body(request)?.try_into()?);
    execute(&state, &ctx, command).await
}

/// Body of `PUT /articles/{article}/name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    pub name: String,
}

async fn rename(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    request: Result<Json<RenameRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let article = article_id(article)?;
    let name = field("name", ArticleName::parse(body(request)?.name))?;
    execute(&state, &ctx, Command::RenameArticle(RenameArticle { article, name })).await
}

/// Body of `PUT /articles/{article}/category`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryRequest {
    pub category: String,
}

async fn change_category(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    request: Result<Json<CategoryRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let article = article_id(article)?;
    let category = field("category", Category::parse(body(request)?.category))?;
    execute(&state, &ctx, Command::ChangeArticleCategory(ChangeArticleCategory { article, category })).await
}

/// Body of `PUT /articles/{article}/reorder-point`; `null` removes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReorderPointRequest {
    pub reorder_point: Option<i64>,
}

async fn set_reorder_point(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
    request: Result<Json<ReorderPointRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let article = article_id(article)?;
    let reorder_point = optional("reorder_point", body(request)?.reorder_point, Quantity::new)?;
    execute(&state, &ctx, Command::SetReorderPoint(SetReorderPoint { article, reorder_point })).await
}

async fn discontinue(
    State(state): State<AppState>,
    Path(article): Path<String>,
    ctx: CommandContext,
) -> Result<impl IntoResponse, ApiError> {
    let article = article_id(article)?;
    execute(&state, &ctx, Command::DiscontinueArticle(DiscontinueArticle { article })).await
}
