//! `/webhooks`: the admin API of webhook subscriptions (docs/webhooks.md).
//! A subscription names an endpoint and what it receives; the `notifier`
//! process delivers. Here: make one (its signing secret is answered once,
//! and to admins again at `/secret`), list, show, enable, disable, delete,
//! and the delivery log with its attempts and a manual re-send.
//!
//! Admins only: a subscription sends stock data out of the system.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use notifier::subscriptions::{self, Created, Delivery, NewSubscription, ResendError, Subscription};
use platform::auth::Principal;
use platform::problem::Problem;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, delete))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(secret))
        .routes(routes!(deliveries))
        .routes(routes!(resend))
}

fn subscription_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_parameter("id", "must be a UUID"))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound { what: "webhook", id: id.to_string() }
}

#[utoipa::path(
    post, path = "/webhooks", tag = "webhooks", security(("bearer" = ["admin"])),
    request_body = NewSubscription,
    responses(
        (status = 201, body = Created, description = "Made; `Location` names it. `secret` signs its deliveries (Standard Webhooks)",
         headers(("location" = String, description = "/webhooks/{id}"))),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "The body is not JSON"),
        (status = 415, content_type = "application/problem+json", body = Problem, description = "The body is not declared as JSON"),
        (status = 422, content_type = "application/problem+json", body = Problem, description = "A field is invalid (`field` names it): a URL that is not http(s) or names an internal address, an unknown event type or alert"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
async fn create(
    State(state): State<AppState>,
    p: axum::Extension<Arc<Principal>>,
    body: Result<Json<NewSubscription>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body?;
    new.validate(state.webhooks.allow_private_addresses).map_err(|e| ApiError::invalid(e.field, e.reason))?;
    let created = subscriptions::create(&state.pool, &new, &p.0.actor()).await.map_err(ApiError::database)?;
    tracing::info!(subscription = %created.subscription.id, url = %created.subscription.url, owner = %created.subscription.owner, "webhook subscription made");
    let location = format!("/webhooks/{}", created.subscription.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)).into_response())
}

/// `GET /webhooks` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only enabled (`true`) or disabled (`false`) ones.
    enabled: Option<bool>,
}

#[utoipa::path(
    get, path = "/webhooks", tag = "webhooks", security(("bearer" = ["admin"])),
    params(ListQuery),
    responses(
        (status = 200, body = Vec<Subscription>, description = "Every subscription, oldest first; a disabled one says why"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "A parameter is invalid"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
async fn list(State(state): State<AppState>, query: Result<Query<ListQuery>, QueryRejection>) -> Result<Json<Vec<Subscription>>, ApiError> {
    let query = query.map_err(|e| ApiError::bad_parameter("enabled", e.body_text()))?.0;
    Ok(Json(subscriptions::list(&state.pool, query.enabled).await.map_err(ApiError::database)?))
}

/// The answers about one subscription.
#[derive(Debug, utoipa::IntoResponses)]
pub enum SubscriptionResponses {
    /// The subscription.
    #[response(status = 200)]
    Found(Subscription),
    /// `id` is not a UUID.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No such subscription.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// PostgreSQL cannot be reached.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

#[utoipa::path(
    get, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = ["admin"])),
    params(("id" = String, Path, format = Uuid, description = "The subscription's id")),
    responses(SubscriptionResponses)
)]
async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Subscription>, ApiError> {
    let id = subscription_id(&id)?;
    subscriptions::get(&state.pool, id).await.map_err(ApiError::database)?.map(Json).ok_or_else(|| not_found(id))
}

#[utoipa::path(
    delete, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = ["admin"])),
    params(("id" = String, Path, format = Uuid, description = "The subscription's id")),
    responses(
        (status = 204, description = "Deleted with its delivery log; nothing more is sent"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "`id` is not a UUID"),
        (status = 404, content_type = "application/problem+json", body = Problem, description = "No such subscription"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = subscription_id(&id)?;
    if subscriptions::delete(&state.pool, id).await.map_err(ApiError::database)? { Ok(StatusCode::NO_CONTENT) } else { Err(not_found(id)) }
}

#[utoipa::path(
    post, path = "/webhooks/{id}/enable", tag = "webhooks", security(("bearer" = ["admin"])),
    params(("id" = String, Path, format = Uuid, description = "The subscription's id")),
    responses(SubscriptionResponses)
)]
async fn enable(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Subscription>, ApiError> {
    let id = subscription_id(&id)?;
    let found = subscriptions::set_enabled(&state.pool, id, true, "").await.map_err(ApiError::database)?;
    found.map(Json).ok_or_else(|| not_found(id))
}

/// `POST /webhooks/{id}/disable` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DisableQuery {
    /// Why (shown with the subscription).
    #[param(pattern = "^[^\\u0000]{0,300}$")]
    reason: Option<String>,
}

#[utoipa::path(
    post, path = "/webhooks/{id}/disable", tag = "webhooks", security(("bearer" = ["admin"])),
    params(("id" = String, Path, format = Uuid, description = "The subscription's id"), DisableQuery),
    responses(SubscriptionResponses)
)]
async fn disable(
    State(state): State<AppState>,
    p: axum::Extension<Arc<Principal>>,
    Path(id): Path<String>,
    query: Result<Query<DisableQuery>, QueryRejection>,
) -> Result<Json<Subscription>, ApiError> {
    let id = subscription_id(&id)?;
    let query = query.map_err(|e| ApiError::bad_parameter("reason", e.body_text()))?.0;
    let reason = match query.reason {
        Some(r) if r.len() > 300 || r.contains('\0') => return Err(ApiError::bad_parameter("reason", "at most 300 characters, no NUL")),
        Some(r) if !r.is_empty() => format!("disabled by {}: {r}", p.0.actor()),
        _ => format!("disabled by {}", p.0.actor()),
    };
    let found = subscriptions::set_enabled(&state.pool, id, false, &reason).await.map_err(ApiError::database)?;
    found.map(Json).ok_or_else(|| not_found(id))
}

/// A subscription's signing secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Secret {
    /// `whsec_` + base64; the HMAC key is the decoded part.
    pub secret: String,
}

#[utoipa::path(
    get, path = "/webhooks/{id}/secret", tag = "webhooks", security(("bearer" = ["admin"])),
    params(("id" = String, Path, format = Uuid, description = "The subscription's id")),
    responses(
        (status = 200, body = Secret, description = "The signing secret"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "`id` is not a UUID"),
        (status = 404, content_type = "application/problem+json", body = Problem, description = "No such subscription"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
async fn secret(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Secret>, ApiError> {
    let id = subscription_id(&id)?;
    let secret = subscriptions::secret(&state.pool, id).await.map_err(ApiError::database)?.ok_or_else(|| not_found(id))?;
    Ok(Json(Secret { secret }))
}

/// The delivery states.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

/// `GET /webhooks/{id}/deliveries` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryState>)]
    state: Option<String>,
    /// Only deliveries older than this one (`id` of the last of the previous page).
    #[param(minimum = 1)]
    before: Option<i64>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[utoipa::path(
    get, path = "/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = ["admin"])),
    params(("id" = String, Path, format = Uuid, description = "The subscription's id"), DeliveriesQuery),
    responses(
        (status = 200, body = Vec<Delivery>, description = "Deliveries, newest first, each with its attempts (status, latency, error)"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "A parameter is invalid (`field` names it)"),
        (status = 404, content_type = "application/problem+json", body = Problem, description = "No such subscription"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    let id = subscription_id(&id)?;
    let query = query.map_err(|e| ApiError::bad_parameter("query", e.body_text()))?.0;
    if let Some(s) = &query.state
        && !["pending", "delivered", "failed"].contains(&s.as_str())
    {
        return Err(ApiError::bad_parameter("state", "one of pending, delivered, failed"));
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_parameter("limit", "must be 1 to 500"));
    }
    if query.before.is_some_and(|b| b < 1) {
        return Err(ApiError::bad_parameter("before", "must be a delivery id"));
    }
    if subscriptions::get(&state.pool, id).await.map_err(ApiError::database)?.is_none() {
        return Err(not_found(id));
    }
    let log = subscriptions::deliveries(&state.pool, id, query.state.as_deref(), query.before, limit).await.map_err(ApiError::database)?;
    Ok(Json(log))
}

#[utoipa::path(
    post, path = "/webhooks/{id}/deliveries/{delivery}/resend", tag = "webhooks", security(("bearer" = ["admin"])),
    params(
        ("id" = String, Path, format = Uuid, description = "The subscription's id"),
        ("delivery" = i64, Path, minimum = 1, description = "The delivery's id"),
    ),
    responses(
        (status = 202, description = "Queued to be sent now, with the same `webhook-id`"),
        (status = 400, content_type = "application/problem+json", body = Problem, description = "A parameter is invalid"),
        (status = 404, content_type = "application/problem+json", body = Problem, description = "No such subscription or delivery"),
        (status = 409, content_type = "application/problem+json", body = Problem, description = "The delivery is still pending"),
        (status = 503, content_type = "application/problem+json", body = Problem, description = "PostgreSQL cannot be reached"),
    )
)]
async fn resend(State(state): State<AppState>, Path((id, delivery)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let id = subscription_id(&id)?;
    let delivery: i64 = delivery.parse().map_err(|_| ApiError::bad_parameter("delivery", "must be a delivery id"))?;
    match subscriptions::resend(&state.pool, id, delivery).await {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(ResendError::NotFound) => Err(ApiError::NotFound { what: "delivery", id: delivery.to_string() }),
        Err(ResendError::Pending) => Err(ApiError::Conflict("the delivery is pending: it is sent when due".into())),
        Err(ResendError::Database(e)) => Err(ApiError::database(e)),
    }
}

/// States in the OpenAPI document what [`NewSubscription::validate`]
/// checks besides the fields' types: the event type and alert names, the
/// lengths, at least one event type or alert (`allOf` the derived schema
/// and an `anyOf` of the two non-empty lists), and a URL form that the
/// service accepts — so that a contract test generates no "valid" request
/// the service must refuse. (Whether the URL's address is public is checked
/// by the service alone.)
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    let Some(components) = openapi.components.as_mut() else { return };
    let Some(derived) = components.schemas.remove("NewSubscription") else { return };
    let mut schema = serde_json::to_value(&derived).expect("a schema is JSON");
    let properties = &mut schema["properties"];
    let mut types = vec!["*"];
    types.extend(events::Event::TYPES);
    properties["event_types"]["items"] = json!({"type": "string", "enum": types});
    properties["event_types"]["uniqueItems"] = json!(true);
    properties["alerts"]["items"] = json!({"type": "string", "enum": notifier::messages::ALERTS});
    properties["alerts"]["uniqueItems"] = json!(true);
    for filter in ["articles", "categories", "warehouses"] {
        properties[filter]["items"] = json!({"type": "string", "pattern": "^[^\\u0000]{1,200}$"});
        properties[filter]["maxItems"] = json!(1000);
    }
    properties["description"]["pattern"] = json!("^[^\\u0000]{0,500}$");
    properties["url"]["pattern"] =
        json!("^https?://([a-z0-9-]{1,30}\\.){0,4}[a-z]{2,20}(:[0-9]{1,4})?(/[A-Za-z0-9._~-]{0,50}){0,5}$");
    let non_empty = |field: &str| json!({"type": "object", "required": [field], "properties": {field: {"type": "array", "minItems": 1}}});
    let example = json!({
        "url": "https://erp.example.com/hooks/stock",
        "event_types": ["StockIssued"],
        "alerts": ["below_reorder_point", "charge_blocked"],
        "categories": ["bolts"],
    });
    let whole = json!({
        "allOf": [schema, {"anyOf": [non_empty("event_types"), non_empty("alerts")]}],
        "examples": [example],
    });
    let whole = serde_json::from_value(whole).expect("the schema reads back");
    components.schemas.insert("NewSubscription".into(), whole);
}
