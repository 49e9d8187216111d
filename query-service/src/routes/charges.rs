//! Charges (lots) of an article: the list by production date, one charge with
//! its stock per warehouse and open reservations, and its movement history
//! with running balances.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use events::{ArticleId, ChargeNo, WarehouseId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::articles::article_tag;
use super::{no_fresh, page_body, param, serve, tags, ReadHeaders};
use crate::cache::{Entry, FetchError};
use crate::consistency;
use crate::cursor::{Page, PageParams, encode};
use crate::error::ApiError;
use crate::startup::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(article_charges)).routes(routes!(charge_detail)).routes(routes!(movements))
}

/// A charge as listed: its dates, status and stock.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ChargeItem {
    pub article: String,
    pub charge: String,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: String,
    pub blocked_reason: Option<String>,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// The columns of a [`ChargeItem`].
pub const CHARGE_COLUMNS: &str = "article_id as article, charge, production_date, expiry_date, quality_status, \
                                  blocked_reason, on_hand, reserved, on_hand - reserved as available";

async fn exists(pool: &PgPool, sql: String, binds: &[&str]) -> Result<bool, sqlx::Error> {
    let mut query = sqlx::query_scalar::<_, bool>(&sql);
    for b in binds {
        query = query.bind(*b);
    }
    query.fetch_one(pool).await
}

/// The charges of an article, newest production date first; keyset-paginated.
#[utoipa::path(
    get, path = "/articles/{article}/charges", tag = "charges",
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
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    let article = param("article", ArticleId::parse(article))?;
    let page = Page::parse(&params, "article-charges", &state.pages)?;
    let key = format!("list:article-charges:{article}:{page:?}");
    let after = match (page.key_str(0), page.key_str(1)) {
        (Some(date), Some(charge)) => Some((param("cursor", date.parse::<NaiveDate>())?, charge)),
        _ => None,
    };
    let id = article.to_string();
    let (state, page, article_ref, id) = (&state, &page, &article, &id);
    let fetch = move || async move {
        let article = article_ref;
        let limit = i64::from(page.limit) + 1;
        let rows: Vec<ChargeItem> = state
            .store
            .query("article_charges", |pool, s| async move {
                let mut q = sqlx::QueryBuilder::new(format!("select {CHARGE_COLUMNS} from {s}.charges where article_id = "));
                q.push_bind(id.clone());
                if let Some((date, charge)) = after {
                    q.push(" and (production_date, charge) < (").push_bind(date).push(", ").push_bind(charge).push(")");
                }
                q.push(" order by production_date desc, charge desc limit ").push_bind(limit);
                let rows: Vec<ChargeItem> = q.build_query_as().fetch_all(&pool).await?;
                if rows.is_empty() && !exists(&pool, format!("select exists (select 1 from {s}.articles where article_id = $1)"), &[id]).await? {
                    return Ok(None);
                }
                Ok(Some(rows))
            })
            .await?
            .ok_or_else(|| FetchError::Missing(tags(&[article_tag(article)])))?;
        let body = page_body(rows, page.limit, |r| encode("article-charges", vec![json!(r.production_date), json!(r.charge)]));
        Ok(Entry::computed(body, tags(&[article_tag(article)])))
    };
    serve(state, &headers, None, &key, fetch, no_fresh, || format!("article {article}")).await
}

#[derive(Debug, Serialize)]
struct ChargeDetail {
    article: String,
    charge: String,
    category: String,
    production_date: NaiveDate,
    expiry_date: Option<NaiveDate>,
    quality_status: String,
    blocked: bool,
    blocked_reason: Option<String>,
    on_hand: i64,
    reserved: i64,
    available: i64,
    warehouses: Vec<serde_json::Value>,
    reservations: Vec<Reservation>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Reservation {
    reservation: String,
    warehouse: String,
    reference: String,
    remaining: i64,
    reserved_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
struct Figures {
    on_hand: i64,
    reserved: i64,
}

async fn load_detail(state: &AppState, article: &ArticleId, charge: &ChargeNo) -> Result<Entry, FetchError> {
    let (a, c) = (article.to_string(), charge.to_string());
    let detail = state
        .store
        .query("charge_detail", |pool, s| async move {
            type Row = (String, NaiveDate, Option<NaiveDate>, String, Option<String>, i64, i64, serde_json::Value);
            let row: Option<Row> = sqlx::query_as(&format!(
                "select category, production_date, expiry_date, quality_status, blocked_reason, on_hand, reserved, warehouses
                 from {s}.charges where article_id = $1 and charge = $2"
            ))
            .bind(&a)
            .bind(&c)
            .fetch_optional(&pool)
            .await?;
            let Some((category, production_date, expiry_date, quality_status, blocked_reason, on_hand, reserved, stock)) = row
            else {
                return Ok(None);
            };
            let reservations: Vec<Reservation> = sqlx::query_as(&format!(
                "select reservation_id as reservation, warehouse, reference, remaining, reserved_at
                 from {s}.reservations where article_id = $1 and charge = $2 order by reservation_id"
            ))
            .bind(&a)
            .bind(&c)
            .fetch_all(&pool)
            .await?;
            let stock: BTreeMap<String, Figures> = serde_json::from_value(stock).unwrap_or_default();
            let warehouses = stock
                .iter()
                .filter(|(_, f)| f.on_hand != 0 || f.reserved != 0)
                .map(|(w, f)| json!({ "warehouse": w, "on_hand": f.on_hand, "reserved": f.reserved, "available": f.on_hand - f.reserved }))
                .collect();
            Ok(Some(ChargeDetail {
                article: a,
                charge: c,
                category,
                production_date,
                expiry_date,
                quality_status,
                blocked: blocked_reason.is_some(),
                blocked_reason,
                on_hand,
                reserved,
                available: on_hand - reserved,
                warehouses,
                reservations,
            }))
        })
        .await?
        .ok_or_else(|| FetchError::Missing(tags(&[article_tag(article)])))?;
    Ok(Entry::computed(serde_json::to_vec(&detail).expect("a charge serialises"), tags(&[article_tag(article)])))
}

/// One charge: dates, quality status, quality hold, stock per warehouse and
/// its open reservations.
#[utoipa::path(
    get, path = "/articles/{article}/charges/{charge}", tag = "charges",
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
    let token = consistency::token(&headers, params)?;
    let key = format!("charge:{article}/{charge}");
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

#[derive(Debug, Serialize, sqlx::FromRow)]
struct MovementItem {
    posted_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    sequence: i64,
    leg: i16,
    kind: String,
    warehouse: String,
    delta: i64,
    /// Balance of the charge in the warehouse right after this movement, in posting-time order.
    balance: i64,
    reservation: Option<String>,
    event_id: uuid::Uuid,
}

/// The movements of a charge by posting time, newest first, each with the
/// balance of the charge in its warehouse right after it (kept right when a
/// movement is backdated before it); keyset-paginated.
#[utoipa::path(
    get, path = "/articles/{article}/charges/{charge}/movements", tag = "charges",
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
    Query(params): Query<MovementParams>,
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
    let key = format!("list:movements:{article}/{charge}:{warehouse:?}:{page:?}");
    let (a, c) = (article.to_string(), charge.to_string());
    let (state, page, article_ref, a, c, warehouse) = (&state, &page, &article, &a, &c, &warehouse);
    let fetch = move || async move {
        let article = article_ref;
        let limit = i64::from(page.limit) + 1;
        let rows: Vec<MovementItem> = state
            .store
            .query("movements", |pool, s| async move {
                // The primary key is in (warehouse, posting time) order per
                // charge: one index range per warehouse, merged newest first.
                let mut q = sqlx::QueryBuilder::new(format!(
                    "select m.* from {s}.charges c, jsonb_object_keys(c.warehouses) as w(warehouse), lateral (
                         select posted_at, recorded_at, sequence, leg, kind, warehouse, delta, balance,
                                reservation_id as reservation, event_id
                         from {s}.movements
                         where article_id = c.article_id and charge = c.charge and warehouse = w.warehouse"
                ));
                if let Some((t, sequence, leg)) = after {
                    q.push(" and (posted_at, sequence, leg) < (")
                        .push_bind(t)
                        .push(", ")
                        .push_bind(sequence)
                        .push(", ")
                        .push_bind(leg)
                        .push(")");
                }
                q.push(" order by posted_at desc, sequence desc, leg desc limit ").push_bind(limit);
                q.push(") m where c.article_id = ").push_bind(a.clone()).push(" and c.charge = ").push_bind(c.clone());
                if let Some(w) = warehouse.as_ref() {
                    q.push(" and w.warehouse = ").push_bind(w.to_string());
                }
                q.push(" order by m.posted_at desc, m.sequence desc, m.leg desc limit ").push_bind(limit);
                let rows: Vec<MovementItem> = q.build_query_as().fetch_all(&pool).await?;
                let exists_sql = format!("select exists (select 1 from {s}.charges where article_id = $1 and charge = $2)");
                if rows.is_empty() && !exists(&pool, exists_sql, &[a, c]).await? {
                    return Ok(None);
                }
                Ok(Some(rows))
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
