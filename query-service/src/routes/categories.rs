//! Charges per category (the planning documents' `mv_chargen_pro_kategorie`):
//! the summary as a stored document, and the charges, newest production date
//! first.

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::NaiveDate;
use events::Category;
use readmodel::keys;
use readmodel::tables::charges;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{no_fresh, page_body, param, serve, tags, ReadHeaders};
use crate::cache::{Entry, FetchError};
use crate::cursor::{Page, PageParams, encode};
use super::params::QueryString;
use crate::error::ApiError;
use crate::state::AppState;

/// A category's summary (a stored document).
pub fn documents() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(category_summary))
}

/// A category's charges.
pub fn lists() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(category_charges))
}

/// A category's charges: how many, how many with stock, how many blocked,
/// and their stock on hand. The stored document; its ETag counts the events
/// that changed it.
#[utoipa::path(
    get, path = "/categories/{category}", tag = "categories", security(("bearer" = ["reader"])),
    params(super::params::CategoryPath),
    responses(
        (status = 200, description = "`{category, version, charges, charges_in_stock, on_hand, blocked}`"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Malformed category"),
        (status = 404, description = "No charge was ever registered in this category"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn category_summary(
    State(state): State<AppState>,
    Path(category): Path<String>,
    headers: ReadHeaders,
) -> Result<Response, ApiError> {
    let category = param("category", Category::parse(category))?;
    let key = keys::category(category.as_str());
    let store = &state.store;
    let (k, c) = (key.as_str(), &category);
    let fetch = move || async move { store.get(k, tags(&[keys::category_tag(c.as_str())])).await };
    serve(&state, &headers, None, &key, fetch, no_fresh, || format!("category {category}")).await
}

/// The charges of a category, newest production date first; keyset-paginated.
#[utoipa::path(
    get, path = "/categories/{category}/charges", tag = "categories", security(("bearer" = ["reader"])),
    params(super::params::CategoryPath, super::params::PageQuery),
    responses(
        (status = 200, description = "A page of charges: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`"),
        (status = 404, description = "No charge was ever registered in this category"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn category_charges(
    State(state): State<AppState>,
    Path(category): Path<String>,
    headers: ReadHeaders,
    QueryString(params): QueryString<PageParams>,
) -> Result<Response, ApiError> {
    let category = param("category", Category::parse(category))?;
    let page = Page::parse(&params, "category-charges", &state.pages)?;
    let after = match (page.key_str(0), page.key_str(1), page.key_str(2)) {
        (Some(date), Some(article), Some(charge)) => Some((param("cursor", date.parse::<NaiveDate>())?, article, charge)),
        _ => None,
    };
    let key = keys::list("category-charges", &[Some(category.as_str()), Some(&page.key_part())]);
    let name = category.to_string();
    let (state, page, category_ref) = (&state, &page, &category);
    let fetch = move || async move {
        let category = category_ref;
        let limit = i64::from(page.limit) + 1;
        let rows = state
            .store
            .query("category_charges", |pool, s| async move { charges::of_category(&pool, &s, &name, after, limit).await })
            .await?
            .ok_or_else(|| FetchError::Missing(tags(&[keys::category_tag(category.as_str())])))?;
        let body = page_body(rows, page.limit, |r| {
            encode("category-charges", vec![json!(r.production_date), json!(r.article), json!(r.charge)])
        });
        Ok(Entry::computed(body, tags(&[keys::category_tag(category.as_str())])))
    };
    serve(state, &headers, None, &key, fetch, no_fresh, || format!("category {category}")).await
}
