//! Articles: the stock of one article, the catalogue, the low-stock list.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use events::{ArticleId, Category};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{no_fresh, page_body, param, serve, tags, ReadHeaders};
use crate::cache::{Entry, FetchError};
use crate::consistency;
use crate::cursor::{Page, PageParams, encode};
use crate::error::ApiError;
use crate::startup::AppState;

/// The stock of an article (a stored document).
pub fn documents() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(article_stock))
}

/// The catalogue, low stock, and the stock as of a time.
pub fn lists() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stock_as_of)).routes(routes!(catalogue)).routes(routes!(low_stock))
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
    params(super::params::ArticlePath, super::params::ConsistencyQuery),
    responses(
        (status = 200, description = "The stock document"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Malformed article id or token"),
        (status = 404, description = "Unknown article"),
        (status = 504, description = "The projection did not reach the token in time"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn article_stock(
    State(state): State<AppState>,
    Path(article): Path<String>,
    headers: ReadHeaders,
    params: consistency::Params,
) -> Result<Response, ApiError> {
    let article = param("article", ArticleId::parse(article))?;
    let token = consistency::token(&headers, params)?;
    let key = format!("stock:{article}");
    let store = &state.store;
    // The tags are made only when a tier below memory is asked.
    let t = || tags(&[article_tag(&article)]);
    let k = key.as_str();
    let fetch = move || async move { store.get(k, t()).await };
    let fresh = move || async move { store.get_fresh(k, t()).await };
    serve(&state, &headers, token, &key, fetch, fresh, || format!("article {article}")).await
}

/// Query parameters of the catalogue (documented by [`super::params::CatalogueQuery`]).
#[derive(Debug, Deserialize)]
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
    get, path = "/articles", tag = "catalogue", params(super::params::CatalogueQuery, super::params::PageQuery),
    responses(
        (status = 200, description = "A page of articles: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn catalogue(
    State(state): State<AppState>,
    headers: ReadHeaders,
    Query(params): Query<CatalogueParams>,
) -> Result<Response, ApiError> {
    let category = params.category.map(|c| param("category", Category::parse(c))).transpose()?;
    if params.name_prefix.as_ref().is_some_and(|p| p.chars().count() > events::MAX_TEXT_LEN) {
        return Err(ApiError::bad("name_prefix", format!("must be at most {} characters long", events::MAX_TEXT_LEN)));
    }
    let prefix = params.name_prefix.map(|p| p.trim().to_lowercase()).filter(|p| !p.is_empty());
    let page = Page::parse(&PageParams { limit: params.limit, cursor: params.cursor }, "catalogue", &state.pages)?;
    let key = format!("list:catalogue:{category:?}:{prefix:?}:{page:?}");
    let (state, prefix, category, page) = (&state, &prefix, &category, &page);
    let fetch = move || async move {
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
    serve(state, &headers, None, &key, fetch, no_fresh, || "catalogue".to_owned()).await
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
    get, path = "/low-stock", tag = "stock", params(super::params::PageQuery),
    responses(
        (status = 200, description = "A page of articles below their reorder point: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn low_stock(
    State(state): State<AppState>,
    headers: ReadHeaders,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    let page = Page::parse(&params, "low-stock", &state.pages)?;
    let key = format!("list:low-stock:{page:?}");
    let (state, page) = (&state, &page);
    let fetch = move || async move {
        let after = page.key_str(0);
        let limit = i64::from(page.limit) + 1;
        let rows: Vec<LowStockItem> = state
            .store
            .query("low_stock", |pool, s| async move {
                let mut q = sqlx::QueryBuilder::new(format!(
                    "select article_id as article, name, category, reorder_point, on_hand, reserved, \
                     on_hand - reserved as available from {s}.low_stock"
                ));
                if let Some(after) = after {
                    q.push(" where article_id > ").push_bind(after);
                }
                q.push(" order by article_id limit ").push_bind(limit);
                q.build_query_as().fetch_all(&pool).await
            })
            .await?;
        let body = page_body(rows, page.limit, |r| encode("low-stock", vec![json!(r.article)]));
        Ok(Entry::computed(body, tags(&[platform::tags::LOW_STOCK.to_owned()])))
    };
    serve(state, &headers, None, &key, fetch, no_fresh, || "low stock".to_owned()).await
}

/// Query parameters of the stock as of a time (documented by [`super::params::AsOfQuery`]).
#[derive(Debug, Deserialize)]
pub struct AsOfParams {
    /// The moment, RFC 3339 (`2026-11-20T18:00:00Z`) or a date (its start in UTC).
    at: Option<String>,
}

#[derive(Debug, Serialize)]
struct AsOfStock {
    article: String,
    at: chrono::DateTime<chrono::Utc>,
    on_hand: i64,
    warehouses: Vec<AsOfWarehouse>,
    charges: Vec<AsOfCharge>,
}

#[derive(Debug, Serialize)]
struct AsOfWarehouse {
    warehouse: String,
    on_hand: i64,
}

#[derive(Debug, Serialize)]
struct AsOfCharge {
    charge: String,
    warehouse: String,
    on_hand: i64,
}

/// The stock on hand of an article as of a moment, per warehouse and per
/// charge and warehouse: for each, the running balance of the last movement
/// posted at or before it (backdated movements count by their posting time).
/// Answered from the movement history, without replaying events.
#[utoipa::path(
    get, path = "/articles/{article}/stock/as-of", tag = "stock",
    params(super::params::ArticlePath, super::params::AsOfQuery),
    responses(
        (status = 200, description = "`{article, at, on_hand, warehouses, charges}`, the shape of `erp-replay stock-as-of`"),
        (status = 400, description = "`at` missing or malformed, or a malformed article id"),
        (status = 404, description = "Unknown article"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn stock_as_of(
    State(state): State<AppState>,
    Path(article): Path<String>,
    headers: ReadHeaders,
    Query(params): Query<AsOfParams>,
) -> Result<Response, ApiError> {
    let article = param("article", ArticleId::parse(article))?;
    let raw = params.at.ok_or_else(|| ApiError::bad("at", "is required: an RFC 3339 time or a date"))?;
    let at = events::parse_moment(&raw).map_err(|reason| ApiError::bad("at", reason))?;
    let key = format!("list:as-of:{article}:{}", at.timestamp_micros());
    let id = article.to_string();
    let (state, article_ref, id) = (&state, &article, &id);
    let fetch = move || async move {
        let article = article_ref;
        let query_id = id.clone();
        let rows = state
            .store
            .query("stock_as_of", |pool, s| async move {
                let id = query_id;
                let known: bool = sqlx::query_scalar(&format!("select exists (select 1 from {s}.articles where article_id = $1)"))
                    .bind(&id)
                    .fetch_one(&pool)
                    .await?;
                if !known {
                    return Ok(None);
                }
                // One index probe per charge and warehouse: the last movement at or before `at`.
                let rows: Vec<(String, String, i64)> = sqlx::query_as(&format!(
                    "select c.charge, w.warehouse, m.balance
                     from {s}.charges c
                     cross join jsonb_object_keys(c.warehouses) as w(warehouse)
                     cross join lateral (
                         select balance from {s}.movements
                         where article_id = c.article_id and charge = c.charge and warehouse = w.warehouse
                           and posted_at <= $2
                         order by posted_at desc, sequence desc, leg desc limit 1
                     ) m
                     where c.article_id = $1 and m.balance <> 0
                     order by c.charge collate \"C\", w.warehouse collate \"C\""
                ))
                .bind(&id)
                .bind(at)
                .fetch_all(&pool)
                .await?;
                Ok(Some(rows))
            })
            .await?
            .ok_or_else(|| FetchError::Missing(tags(&[article_tag(article)])))?;
        let mut warehouses: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for (_, w, n) in &rows {
            *warehouses.entry(w.as_str()).or_default() += n;
        }
        let body = AsOfStock {
            article: id.clone(),
            at,
            on_hand: rows.iter().map(|r| r.2).sum(),
            warehouses: warehouses
                .iter()
                .filter(|(_, n)| **n != 0)
                .map(|(w, n)| AsOfWarehouse { warehouse: (*w).to_owned(), on_hand: *n })
                .collect(),
            charges: rows
                .iter()
                .map(|(c, w, n)| AsOfCharge { charge: c.clone(), warehouse: w.clone(), on_hand: *n })
                .collect(),
        };
        Ok(Entry::computed(serde_json::to_vec(&body).expect("a stock serialises"), tags(&[article_tag(article)])))
    };
    serve(state, &headers, None, &key, fetch, no_fresh, || format!("article {article}")).await
}
