//! Articles: the stock of one article, the catalogue, the low-stock list.

use axum::extract::{Path, State};
use axum::response::Response;
use events::{ArticleId, Category};
use readmodel::keys;
use readmodel::tables::{articles, low_stock, movements};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{no_fresh, page_body, param, serve, tags, ReadHeaders};
use crate::cache::{Entry, FetchError};
use crate::consistency;
use crate::cursor::{Page, PageParams, encode};
use super::params::QueryString;
use crate::error::ApiError;
use crate::state::AppState;

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
    keys::article_tag(article.as_str())
}

/// On hand, reserved and available of one article: in total, per warehouse,
/// and per charge (with its dates and quality status) and warehouse. The
/// stored document, returned byte for byte; its ETag is the article stream's
/// sequence.
#[utoipa::path(
    get, path = "/articles/{article}/stock", tag = "stock", security(("bearer" = ["reader"])),
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
    let token = consistency::token(headers.consistency_token.as_ref(), params)?;
    let key = keys::stock(article.as_str());
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
    category: Option<String>,
    name_prefix: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// The article catalogue, by name (case-insensitive), optionally of one
/// category and with a name prefix; keyset-paginated.
#[utoipa::path(
    get, path = "/articles", tag = "catalogue", security(("bearer" = ["reader"])), params(super::params::CatalogueQuery, super::params::PageQuery),
    responses(
        (status = 200, description = "A page of articles: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn catalogue(
    State(state): State<AppState>,
    headers: ReadHeaders,
    QueryString(params): QueryString<CatalogueParams>,
) -> Result<Response, ApiError> {
    let category = params.category.map(|c| param("category", Category::parse(c))).transpose()?;
    if params.name_prefix.as_ref().is_some_and(|p| p.chars().count() > events::MAX_TEXT_LEN) {
        return Err(ApiError::bad("name_prefix", format!("must be at most {} characters long", events::MAX_TEXT_LEN)));
    }
    let prefix = params.name_prefix.map(|p| p.trim().to_lowercase()).filter(|p| !p.is_empty());
    let page = Page::parse(&PageParams { limit: params.limit, cursor: params.cursor }, "catalogue", &state.pages)?;
    let filter = articles::CatalogueFilter { category: category.map(String::from), name_prefix: prefix };
    let key = keys::list("catalogue", &[filter.category.as_deref(), filter.name_prefix.as_deref(), Some(&page.key_part())]);
    let (state, filter, page) = (&state, &filter, &page);
    let fetch = move || async move {
        let after = page.key_str(0).zip(page.key_str(1));
        let limit = i64::from(page.limit) + 1;
        let filter = filter.clone();
        let rows = state
            .store
            .query("catalogue", |pool, s| async move { articles::catalogue(&pool, &s, &filter, after, limit).await })
            .await?;
        let body = page_body(rows, page.limit, |r| encode("catalogue", vec![json!(r.name_fold), json!(r.article)]));
        Ok(Entry::computed(body, tags(&[keys::CATALOGUE_TAG.to_owned()])))
    };
    serve(state, &headers, None, &key, fetch, no_fresh, || "catalogue".to_owned()).await
}

/// Articles whose available stock is below their reorder point (not
/// discontinued ones), by article id; keyset-paginated.
#[utoipa::path(
    get, path = "/low-stock", tag = "stock", security(("bearer" = ["reader"])), params(super::params::PageQuery),
    responses(
        (status = 200, description = "A page of articles below their reorder point: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn low_stock(
    State(state): State<AppState>,
    headers: ReadHeaders,
    QueryString(params): QueryString<PageParams>,
) -> Result<Response, ApiError> {
    let page = Page::parse(&params, "low-stock", &state.pages)?;
    let key = keys::list("low-stock", &[Some(&page.key_part())]);
    let (state, page) = (&state, &page);
    let fetch = move || async move {
        let after = page.key_str(0);
        let limit = i64::from(page.limit) + 1;
        let rows = state.store.query("low_stock", |pool, s| async move { low_stock::page(&pool, &s, after, limit).await }).await?;
        let body = page_body(rows, page.limit, |r| encode("low-stock", vec![json!(r.article)]));
        Ok(Entry::computed(body, tags(&[keys::LOW_STOCK_TAG.to_owned()])))
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
    get, path = "/articles/{article}/stock/as-of", tag = "stock", security(("bearer" = ["analyst"])),
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
    QueryString(params): QueryString<AsOfParams>,
) -> Result<Response, ApiError> {
    let article = param("article", ArticleId::parse(article))?;
    let raw = params.at.ok_or_else(|| ApiError::bad("at", "is required: an RFC 3339 time or a date"))?;
    let at = events::parse_moment(&raw).map_err(|reason| ApiError::bad("at", reason))?;
    let key = keys::list("as-of", &[Some(article.as_str()), Some(&at.timestamp_micros().to_string())]);
    let id = article.to_string();
    let (state, article_ref, id) = (&state, &article, &id);
    let fetch = move || async move {
        let article = article_ref;
        let query_id = id.clone();
        let rows = state
            .store
            .query("stock_as_of", |pool, s| async move { movements::balances_at(&pool, &s, &query_id, at).await })
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
