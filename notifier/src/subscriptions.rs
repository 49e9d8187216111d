//! Webhook subscriptions and their delivery log: what the admin API
//! (command-service, `/webhooks`) reads and writes. The notifier's intake
//! reads the enabled ones; its deliverer writes the log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::messages::ALERTS;

/// Most entries in a filter list.
const MAX_LIST: usize = 1_000;

/// A subscription as it is asked for.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// Where deliveries are POSTed: `http` or `https`, a public address
    /// unless the service allows private ones.
    #[schema(example = "https://erp.example.com/hooks/stock")]
    pub url: String,
    /// What the endpoint is for.
    #[serde(default)]
    pub description: String,
    /// Stock event types to receive (`StockReceived`, ...), or `*` for every one.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Business alerts to receive: below_reorder_point, above_reorder_point,
    /// charge_blocked, charge_released, quality_rejected, charge_expiring,
    /// job_finished, job_dead.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Only these articles (empty: all).
    #[serde(default)]
    pub articles: Vec<String>,
    /// Only articles of these categories (empty: all).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Only events in these warehouses (empty: all; messages that name no
    /// warehouse — master data, alerts — pass).
    #[serde(default)]
    pub warehouses: Vec<String>,
    /// `charge_expiring`: charges that expire within this many days (default 7).
    #[schema(minimum = 0, maximum = 3650)]
    pub expiring_within_days: Option<i32>,
}

/// Why a subscription cannot be made: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl NewSubscription {
    /// Checks every field; the URL against the address guard.
    pub fn validate(&self, allow_private: bool) -> Result<(), Invalid> {
        let invalid = |field, reason: String| Err(Invalid { field, reason });
        if self.url.len() > 2_000 {
            return invalid("url", "at most 2000 characters".into());
        }
        if let Err(e) = crate::guard::check_url(&self.url, allow_private) {
            return invalid("url", e.to_string());
        }
        if self.description.chars().count() > 500 || self.description.contains('\0') {
            return invalid("description", "at most 500 characters, no NUL".into());
        }
        if self.event_types.is_empty() && self.alerts.is_empty() {
            return invalid("event_types", "name at least one event type or alert".into());
        }
        for t in &self.event_types {
            if t != "*" && !events::Event::TYPES.contains(&t.as_str()) {
                return invalid("event_types", format!("{t:?} is not an event type; one of *, {}", events::Event::TYPES.join(", ")));
            }
        }
        for (field, list) in [("event_types", &self.event_types), ("alerts", &self.alerts)] {
            if let Some(twice) = list.iter().enumerate().find(|(i, v)| list[..*i].contains(v)).map(|(_, v)| v) {
                return invalid(field, format!("{twice:?} is listed twice"));
            }
        }
        for a in &self.alerts {
            if !ALERTS.contains(&a.as_str()) {
                return invalid("alerts", format!("{a:?} is not an alert; one of {}", ALERTS.join(", ")));
            }
        }
        for (field, list) in [("articles", &self.articles), ("categories", &self.categories), ("warehouses", &self.warehouses)] {
            if list.len() > MAX_LIST {
                return invalid(field, format!("at most {MAX_LIST} entries"));
            }
            if list.iter().any(|v| v.is_empty() || v.chars().count() > 200 || v.contains('\0')) {
                return invalid(field, "each entry 1 to 200 characters, no NUL".into());
            }
        }
        if let Some(d) = self.expiring_within_days
            && !(0..=3650).contains(&d)
        {
            return invalid("expiring_within_days", "0 to 3650".into());
        }
        Ok(())
    }
}

/// A subscription as the API shows it (the secret only when made).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Subscription {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub alerts: Vec<String>,
    pub articles: Vec<String>,
    pub categories: Vec<String>,
    pub warehouses: Vec<String>,
    pub expiring_within_days: i32,
    /// The principal that made it.
    pub owner: String,
    pub enabled: bool,
    /// Why it was disabled: by hand, `410 Gone`, or failing for too long.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Since when every attempt has failed (absent while deliveries succeed).
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A subscription just made, with its signing secret (shown this once;
/// `GET /webhooks/{id}/secret` shows it again to admins).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Created {
    #[serde(flatten)]
    pub subscription: Subscription,
    /// The Standard Webhooks signing secret, `whsec_` + base64.
    pub secret: String,
}

const COLUMNS: &str = "id, url, description, event_types, alerts, articles, categories, warehouses, expiring_within_days, owner, enabled, \
                       disabled_reason, disabled_at, failing_since, created_at, updated_at";

/// Makes a subscription (validated before) with a new secret.
pub async fn create(pool: &PgPool, new: &NewSubscription, owner: &str) -> Result<Created, sqlx::Error> {
    let secret = crate::sign::new_secret();
    let url = crate::guard::check_url(&new.url, true).map(|u| u.to_string()).unwrap_or_else(|_| new.url.clone());
    let subscription: Subscription = sqlx::query_as(&format!(
        "insert into webhook_subscriptions (id, url, description, event_types, alerts, articles, categories, warehouses,
                                            expiring_within_days, secret, owner)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(url)
    .bind(&new.description)
    .bind(&new.event_types)
    .bind(&new.alerts)
    .bind(&new.articles)
    .bind(&new.categories)
    .bind(&new.warehouses)
    .bind(new.expiring_within_days.unwrap_or(7))
    .bind(&secret)
    .bind(owner)
    .fetch_one(pool)
    .await?;
    Ok(Created { subscription, secret })
}

pub async fn list(db: impl sqlx::PgExecutor<'_>, enabled: Option<bool>) -> Result<Vec<Subscription>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from webhook_subscriptions where $1::bool is null or enabled = $1 order by created_at, id"
    ))
    .bind(enabled)
    .fetch_all(db)
    .await
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as(&format!("select {COLUMNS} from webhook_subscriptions where id = $1")).bind(id).fetch_optional(pool).await
}

pub async fn secret(pool: &PgPool, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("select secret from webhook_subscriptions where id = $1").bind(id).fetch_optional(pool).await?;
    Ok(row.map(|r| r.0))
}

/// Enables (clearing the reason and the failure clock: pending deliveries
/// go out again) or disables by hand.
pub async fn set_enabled(pool: &PgPool, id: Uuid, enabled: bool, reason: &str) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as(&format!(
        "update webhook_subscriptions
         set enabled = $2, updated_at = now(),
             disabled_reason = case when $2 then null else $3 end,
             disabled_at = case when $2 then null when enabled then now() else disabled_at end,
             failing_since = case when $2 then null else failing_since end
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(enabled)
    .bind(reason)
    .fetch_optional(pool)
    .await
}

/// Deletes a subscription and its deliveries; false when there was none.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("delete from webhook_subscriptions where id = $1").bind(id).execute(pool).await?.rows_affected() > 0)
}

/// One delivery in the log, with every attempt at it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    /// The `webhook-id` header (the event's id, or the alert's).
    pub message_id: Uuid,
    pub event_type: String,
    /// pending, delivered or failed.
    pub state: String,
    pub attempts: i32,
    /// When the next attempt is due (pending).
    pub due_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempt_log: Vec<AttemptLog>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AttemptLog {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: i32,
    /// The HTTP status answered; absent when none came (timeout, refused connection).
    pub status: Option<i32>,
    pub error: Option<String>,
    /// The notifier instance that made it.
    pub worker: String,
}

/// The newest deliveries of a subscription (before `before`, an id), with their attempts.
pub async fn deliveries(
    pool: &PgPool,
    subscription: Uuid,
    state: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    type Row = (i64, Uuid, String, String, i32, DateTime<Utc>, Option<i32>, Option<String>, DateTime<Utc>, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "select id, message_id, event_type, state, attempts, due_at, last_status, last_error, created_at, finished_at
         from webhook_deliveries
         where subscription_id = $1 and ($2::text is null or state = $2) and ($3::int8 is null or id < $3)
         order by id desc limit $4",
    )
    .bind(subscription)
    .bind(state)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    type AttemptRow = (i64, i32, DateTime<Utc>, i32, Option<i32>, Option<String>, String);
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "select delivery_id, attempt, started_at, latency_ms, status, error, worker from webhook_attempts
         where delivery_id = any($1) order by delivery_id, attempt",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, message_id, event_type, state, attempts_n, due_at, last_status, last_error, created_at, finished_at)| Delivery {
            id,
            message_id,
            event_type,
            state,
            attempts: attempts_n,
            due_at,
            last_status,
            last_error,
            created_at,
            finished_at,
            attempt_log: attempts
                .iter()
                .filter(|a| a.0 == id)
                .map(|(_, attempt, started_at, latency_ms, status, error, worker)| AttemptLog {
                    attempt: *attempt,
                    started_at: *started_at,
                    latency_ms: *latency_ms,
                    status: *status,
                    error: error.clone(),
                    worker: worker.clone(),
                })
                .collect(),
        })
        .collect())
}

/// Why a re-send was not done.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("no such delivery")]
    NotFound,
    #[error("the delivery is pending: it is sent when due")]
    Pending,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Sends a delivered or failed delivery again, now, with the same `webhook-id`.
pub async fn resend(pool: &PgPool, subscription: Uuid, delivery: i64) -> Result<(), ResendError> {
    let row: Option<(String,)> = sqlx::query_as(
        "update webhook_deliveries d set state = 'pending', due_at = now(), finished_at = null
         from webhook_deliveries old
         where d.id = $2 and d.subscription_id = $1 and old.id = d.id and old.state <> 'pending'
         returning old.state",
    )
    .bind(subscription)
    .bind(delivery)
    .fetch_optional(pool)
    .await?;
    if row.is_some() {
        sqlx::query("select pg_notify($1, '')").bind(crate::deliver::CHANNEL).execute(pool).await?;
        return Ok(());
    }
    let exists: Option<(String,)> = sqlx::query_as("select state from webhook_deliveries where id = $1 and subscription_id = $2")
        .bind(delivery)
        .bind(subscription)
        .fetch_optional(pool)
        .await?;
    Err(if exists.is_some() { ResendError::Pending } else { ResendError::NotFound })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(url: &str) -> NewSubscription {
        NewSubscription {
            url: url.into(),
            description: String::new(),
            event_types: vec!["StockReceived".into()],
            alerts: vec![],
            articles: vec![],
            categories: vec![],
            warehouses: vec![],
            expiring_within_days: None,
        }
    }

    #[test]
    fn each_refusal_names_its_field() {
        let field = |s: NewSubscription, allow| s.validate(allow).err().map(|e| e.field);
        assert_eq!(field(new("https://hooks.example.com/x"), false), None);
        assert_eq!(field(new("http://127.0.0.1:9/x"), false), Some("url"));
        assert_eq!(field(new("http://127.0.0.1:9/x"), true), None);
        assert_eq!(field(NewSubscription { event_types: vec!["StockStolen".into()], ..new("https://a.example") }, false), Some("event_types"));
        assert_eq!(field(NewSubscription { event_types: vec![], ..new("https://a.example") }, false), Some("event_types"));
        assert_eq!(field(NewSubscription { alerts: vec!["fire".into()], ..new("https://a.example") }, false), Some("alerts"));
        let twice = vec!["job_dead".into(), "job_dead".into()];
        assert_eq!(field(NewSubscription { alerts: twice, ..new("https://a.example") }, false), Some("alerts"));
        assert_eq!(field(NewSubscription { warehouses: vec![String::new()], ..new("https://a.example") }, false), Some("warehouses"));
        assert_eq!(field(NewSubscription { expiring_within_days: Some(-1), ..new("https://a.example") }, false), Some("expiring_within_days"));
    }
}
