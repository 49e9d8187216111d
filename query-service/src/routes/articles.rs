//! Articles: the stock of one article, the catalogue, the low-stock list.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use events::{ArticleId, Category};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{page_body, param, serve, tags};
use crate::cache::Entry;
use crate::consistency;
use crate::cursor::{Page, PageParams, encode};
use crate::error::ApiError;
use crate::startup::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(article_stock)).routes(routes!(catalogue)).routes(routes!(low_stock))
}

/// The cache tag of everything about one article.
pub fn article_tag(article: &ArticleId) -> String {
    platform::tags::article(article.as_str())
}

/// On hand, reserved and available of one article: in total, per warehouse,
/// and per charge (with its dates and quality status) and warehouse. The
/// stored document, returned byte for byte; its ETag is the article stream's
/// sequence.
#[utoipa::path(
    get, path = "/articles/{article}/stock", tag = "stock",
    params(
        ("article" = String, Path, description = "Article id, e.g. ART-1000"),
        ("consistent_with" = Option<String>, Query, description = "A consistency token (`article:ART-1000@12`): answer only once the projection includes that write"),
    ),
    responses(
        (status = 200, description = "The stock document"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Malformed article id or token"),
        (status = 404, description = "Unknown article"),
        (status = 504, description = "The projection did not reach the token in time"),
    )
)]
async fn article_stock(
    State(state): State<AppState>,
    Path(article): Path<String>,
    headers: HeaderMap,
    Query(params): Query<consistency::Params>,
) -> Result<Response, ApiError> {
    let article = param("article", ArticleId::parse(article))?;
    let token = consistency::token(&headers, params)?;
    let key = format!("stock:{article}");
    let t = tags(&[article_tag(&article)]);
    let store = &state.store;
    serve(&state, &headers, token, &key, store.get(&key, t.clone()), store.get_fresh(&key, t), || {
        format!("article {article}")
    })
    .await
}

/// Query parameters of the catalogue.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CatalogueParams {
    /// Only articles of this category.
    category: Option<String>,
    /// Only articles whose name starts with this (case-insensitive).
    name_prefix: Option<String>,
    /// Items per page (default 50, at most 500).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct CatalogueItem {
    article: String,
    name: String,
    category: String,
    #[sqlx(skip)]
    unit: Value,
    #[serde(skip)]
    unit_code: String,
    #[serde(skip)]
    unit_decimals: i16,
    reorder_point: Option<i64>,
    discontinued: bool,
    #[serde(skip)]
    name_fold: String,
}

/// The article catalogue, by name (case-insensitive), optionally of one
/// category and with a name prefix; keyset-paginated.
#[utoipa::path(
    get, path = "/articles", tag = "catalogue", params(CatalogueParams),
    responses(
        (status = 200, description = "A page of articles: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`"),
    )
)]
async fn catalogue(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<CatalogueParams>,
) -> Result<Response, ApiError> {
    let category = params.category.map(|c| param("category", Category::parse(c))).transpose()?;
    let prefix = params.name_prefix.map(|p| p.trim().to_lowercase()).filter(|p| !p.is_empty());
    if prefix.as_ref().is_some_and(|p| p.chars().count() > events::MAX_TEXT_LEN) {
        return Err(ApiError::bad("name_prefix", format!("must be at most {} characters long", events::MAX_TEXT_LEN)));
    }
    let page = Page::parse(&PageParams { limit: params.limit, cursor: params.cursor }, "catalogue", &state.pages)?;
    let key = format!("list:catalogue:{category:?}:{prefix:?}:{page:?}");
    let fetch = async {
        let pattern = prefix.as_deref().map(|p| format!("{}%", escape_like(p)));
        let category = category.as_ref().map(|c| c.as_str().to_owned());
        let after = page.key_str(0).zip(page.key_str(1));
        let limit = i64::from(page.limit) + 1;
        let rows: Vec<CatalogueItem> = state
            .store
            .query("catalogue", |pool, s| async move {
                let mut q = sqlx::QueryBuilder::new(format!(
                    "select article_id as article, name, category, unit_code, unit_decimals, reorder_point, \
                     discontinued, name_fold from {s}.articles where true"
                ));
                if let Some(category) = category {
                    q.push(" and category = ").push_bind(category);
                }
                if let Some(pattern) = pattern {
                    q.push(" and name_fold like ").push_bind(pattern);
                }
                if let Some((name, id)) = after {
                    q.push(" and (name_fold, article_id) > (").push_bind(name).push(", ").push_bind(id).push(")");
                }
                q.push(" order by name_fold, article_id limit ").push_bind(limit);
                q.build_query_as().fetch_all(&pool).await
            })
            .await?;
        let rows: Vec<CatalogueItem> = rows
            .into_iter()
            .map(|mut r| {
                r.unit = json!({ "code": r.unit_code, "decimals": r.unit_decimals });
                r
            })
            .collect();
        let body = page_body(rows, page.limit, |r| encode("catalogue", vec![json!(r.name_fold), json!(r.article)]));
        Ok(Entry::computed(body, tags(&[platform::tags::CATALOGUE.to_owned()])))
    };
    serve(&state, &headers, None, &key, fetch, std::future::pending(), || "catalogue".to_owned()).await
}

/// `%`, `_` and `\` match themselves in a LIKE pattern.
fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct LowStockItem {
    article: String,
    name: String,
    category: String,
    reorder_point: i64,
    on_hand: i64,
    reserved: i64,
    available: i64,
}

/// Articles whose available stock is below their reorder point (not
/// discontinued ones), by article id; keyset-paginated.
#[utoipa::path(
    get, path = "/low-stock", tag = "stock", params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses(
        (status = 200, description = "A page of articles below their reorder point: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`"),
    )
)]
async fn low_stock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    let page = Page::parse(&params, "low-stock", &state.pages)?;
    let key = format!("list:low-stock:{page:?}");
    let fetch = async {
        let after = page.key_str(0);
        let limit = i64::from(page.limit) + 1;
        let rows: Vec<LowStockItem> = state
            .store
            .query("low_stock", |pool, s| async move {
                let mut q = sqlx::QueryBuilder::new(format!(
                    "select article_id as article, name, category, reorder_point, on_hand, reserved, available \
                     from {s}.articles where not discontinued and available < reorder_point"
                ));
                if let Some(after) = after {
                    q.push(" and article_id > ").push_bind(after);
                }
                q.push(" order by article_id limit ").push_bind(limit);
                q.build_query_as().fetch_all(&pool).await
            })
            .await?;
        let body = page_body(rows, page.limit, |r| encode("low-stock", vec![json!(r.article)]));
        Ok(Entry::computed(body, tags(&[platform::tags::LOW_STOCK.to_owned()])))
    };
    serve(&state, &headers, None, &key, fetch, std::future::pending(), || "low stock".to_owned()).await
}
