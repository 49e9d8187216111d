//! Charges (lots) of an article: the list by production date, one charge with
//! its stock per warehouse and open reservations, and its movement history
//! with running balances.

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use events::{ArticleId, ChargeNo, WarehouseId};
use readmodel::keys;
use readmodel::tables::{charges, movements};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::articles::article_tag;
use super::{no_fresh, page_body, param, serve, tags, ReadHeaders};
use crate::cache::{Entry, FetchError};
use crate::consistency;
use crate::cursor::{Page, PageParams, encode};
use super::params::QueryString;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(article_charges)).routes(routes!(charge_detail)).routes(routes!(movements))
}

/// The charges of an article, newest production date first; keyset-paginated.
#[utoipa::path(
    get, path = "/articles/{article}/charges", tag = "charges", security(("bearer" = ["reader"])),
    params(super::params::ArticlePath, super::params::PageQuery),
    responses(
        (status = 200, description = "A page of charges: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`"),
        (status = 404, description = "Unknown article"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn article_charges(
    State(state): State<AppState>,
    Path(article): Path<String>,
    headers: ReadHeaders,
    QueryString(params): QueryString<PageParams>,
) -> Result<Response, ApiError> {
    let article = param("article", ArticleId::parse(article))?;
    let page = Page::parse(&params, "article-charges", &state.pages)?;
    let key = keys::list("article-charges", &[Some(article.as_str()), Some(&page.key_part())]);
    let after = match (page.key_str(0), page.key_str(1)) {
        (Some(date), Some(charge)) => Some((param("cursor", date.parse::<NaiveDate>())?, charge)),
        _ => None,
    };
    let id = article.to_string();
    let (state, page, article_ref) = (&state, &page, &article);
    let fetch = move || async move {
        let article = article_ref;
        let limit = i64::from(page.limit) + 1;
        let rows = state
            .store
            .query("article_charges", |pool, s| async move { charges::of_article(&pool, &s, &id, after, limit).await })
            .await?
            .ok_or_else(|| FetchError::Missing(tags(&[article_tag(article)])))?;
        let body = page_body(rows, page.limit, |r| encode("article-charges", vec![json!(r.production_date), json!(r.charge)]));
        Ok(Entry::computed(body, tags(&[article_tag(article)])))
    };
    serve(state, &headers, None, &key, fetch, no_fresh, || format!("article {article}")).await
}

async fn load_detail(state: &AppState, article: &ArticleId, charge: &ChargeNo) -> Result<Entry, FetchError> {
    let (a, c) = (article.to_string(), charge.to_string());
    let detail = state
        .store
        .query("charge_detail", |pool, s| async move { charges::detail(&pool, &s, &a, &c).await })
        .await?
        .ok_or_else(|| FetchError::Missing(tags(&[article_tag(article)])))?;
    Ok(Entry::computed(serde_json::to_vec(&detail).expect("a charge serialises"), tags(&[article_tag(article)])))
}

/// One charge: dates, quality status, quality hold, stock per warehouse and
/// its open reservations.
#[utoipa::path(
    get, path = "/articles/{article}/charges/{charge}", tag = "charges", security(("bearer" = ["reader"])),
    params(super::params::ChargePath, super::params::ConsistencyQuery),
    responses(
        (status = 200, description = "The charge"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "A malformed parameter, named in `field`"),
        (status = 404, description = "Unknown article or charge"),
        (status = 504, description = "The projection did not reach the token in time"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn charge_detail(
    State(state): State<AppState>,
    Path((article, charge)): Path<(String, String)>,
    headers: ReadHeaders,
    params: consistency::Params,
) -> Result<Response, ApiError> {
    let article = param("article", ArticleId::parse(article))?;
    let charge = param("charge", ChargeNo::parse(charge))?;
    let token = consistency::token(headers.consistency_token.as_ref(), params)?;
    let key = keys::charge(article.as_str(), charge.as_str());
    let (st, a, c) = (&state, &article, &charge);
    let (fetch, fresh) = (move || load_detail(st, a, c), move || load_detail(st, a, c));
    serve(&state, &headers, token, &key, fetch, fresh, || format!("charge {charge} of article {article}")).await
}

/// Query parameters of a movement history (documented by [`super::params::MovementQuery`]).
#[derive(Debug, Deserialize)]
pub struct MovementParams {
    /// Only movements in this warehouse.
    warehouse: Option<String>,
    /// Items per page (default 50, at most 500).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The movements of a charge by posting time, newest first, each with the
/// balance of the charge in its warehouse right after it (kept right when a
/// movement is backdated before it); keyset-paginated.
#[utoipa::path(
    get, path = "/articles/{article}/charges/{charge}/movements", tag = "charges", security(("bearer" = ["reader"])),
    params(super::params::ChargePath, super::params::MovementQuery, super::params::PageQuery),
    responses(
        (status = 200, description = "A page of movements: `{items, next_cursor}`"),
        (status = 400, description = "A malformed parameter, named in `field`"),
        (status = 404, description = "Unknown article or charge"),
        (status = 503, description = "The read models cannot be reached", content_type = "application/problem+json"),
    )
)]
async fn movements(
    State(state): State<AppState>,
    Path((article, charge)): Path<(String, String)>,
    headers: ReadHeaders,
    QueryString(params): QueryString<MovementParams>,
) -> Result<Response, ApiError> {
    let article = param("article", ArticleId::parse(article))?;
    let charge = param("charge", ChargeNo::parse(charge))?;
    let warehouse = params.warehouse.map(|w| param("warehouse", WarehouseId::parse(w))).transpose()?;
    let page = Page::parse(&PageParams { limit: params.limit, cursor: params.cursor }, "movements", &state.pages)?;
    let after = match (page.key_str(0), page.key_i64(1), page.key_i64(2)) {
        (Some(t), Some(sequence), Some(leg)) => {
            Some((param("cursor", t.parse::<DateTime<Utc>>())?, sequence, i16::try_from(leg).unwrap_or(0)))
        }
        _ => None,
    };
    let key = keys::list(
        "movements",
        &[Some(article.as_str()), Some(charge.as_str()), warehouse.as_ref().map(WarehouseId::as_str), Some(&page.key_part())],
    );
    let (a, c, w) = (article.to_string(), charge.to_string(), warehouse.map(String::from));
    let (state, page, article_ref) = (&state, &page, &article);
    let fetch = move || async move {
        let article = article_ref;
        let limit = i64::from(page.limit) + 1;
        let rows = state
            .store
            .query("movements", |pool, s| async move {
                movements::history(&pool, &s, (&a, &c), w.as_deref(), after, limit).await
            })
            .await?
            .ok_or_else(|| FetchError::Missing(tags(&[article_tag(article)])))?;
        let body = page_body(rows, page.limit, |m| {
            encode("movements", vec![json!(m.posted_at), json!(m.sequence), json!(m.leg)])
        });
        Ok(Entry::computed(body, tags(&[article_tag(article)])))
    };
    serve(state, &headers, None, &key, fetch, no_fresh, || format!("charge {charge} of article {article}")).await
}
