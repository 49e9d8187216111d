//! Sending deliveries. A delivery is claimed with a lease (a token and an
//! expiry, `for update skip locked`), sent signed, and its outcome written
//! under the token, so any number of notifier instances share the work and
//! a killed one's claims fall to the others when their lease runs out (the
//! receiver may then see that message twice, with the same `webhook-id`).
//!
//! Per endpoint, deliveries with the same ordering key (the article) go one
//! after the other: one is claimed only when no earlier one of its key is
//! still pending. A failing delivery therefore holds back the later ones of
//! its article for that endpoint until it is delivered or has failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics;
use crate::settings::WebhookSettings;
use crate::sign;

/// Where the intake announces new deliveries (`NOTIFY`).
pub const CHANNEL: &str = "erp_webhooks";

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// A claimed delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Claimed {
    id: i64,
    subscription_id: Uuid,
    ordering_key: String,
    message_id: Uuid,
    payload: String,
    traceparent: Option<String>,
    attempts: i32,
    lease_token: Uuid,
    url: String,
    secret: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Delivered(u16),
    /// `410 Gone`: the endpoint is disabled.
    Gone,
    Failed { status: Option<u16>, error: String, retry_after: Option<Duration> },
}

impl Outcome {
    fn status(&self) -> Option<i32> {
        match self {
            Outcome::Delivered(s) => Some(i32::from(*s)),
            Outcome::Gone => Some(410),
            Outcome::Failed { status, .. } => status.map(i32::from),
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            Outcome::Failed { error, .. } => Some(error),
            Outcome::Gone => Some("410 Gone"),
            Outcome::Delivered(_) => None,
        }
    }
}

/// The delivery loop.
pub struct Deliverer {
    pool: PgPool,
    client: reqwest::Client,
    settings: WebhookSettings,
    schedule: Vec<Duration>,
    name: String,
    /// When the loop last went round (milliseconds since the epoch), for readiness.
    pub alive: Arc<AtomicI64>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Deliverer {
    pub fn new(pool: PgPool, settings: WebhookSettings) -> anyhow::Result<Self> {
        let client = crate::guard::client(settings.allow_private_addresses, settings.timeout())?;
        let schedule = settings.schedule()?;
        let name = settings.instance_name();
        Ok(Self { pool, client, settings, schedule, name, alive: Arc::new(AtomicI64::new(Utc::now().timestamp_millis())) })
    }

    /// A claim holds a delivery for the timeout and some: the attempt ends before the lease does.
    fn lease(&self) -> Duration {
        self.settings.timeout() * 2 + Duration::from_secs(5)
    }

    /// Sends due deliveries until `shutdown`; attempts in flight are finished first.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for new deliveries; polling");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new deliveries; polling");
                None
            }
        };
        let poll = Duration::from_millis(self.settings.poll_ms);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            self.alive.store(Utc::now().timestamp_millis(), Ordering::Release);
            let free = self.settings.concurrency.saturating_sub(in_flight.len());
            let mut claimed = 0;
            if free > 0 && !shutdown.is_cancelled() {
                match self.claim(free).await {
                    Ok(deliveries) => {
                        claimed = deliveries.len();
                        for d in deliveries {
                            let (me, shutdown) = (self.clone(), shutdown.clone());
                            in_flight.spawn(async move { me.chain(d, shutdown).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming deliveries failed"),
                }
            }
            if tokio::time::Instant::now() >= next_sweep {
                if let Err(e) = self.sweep().await {
                    tracing::debug!(error = %e, "sweeping old deliveries failed");
                }
                next_sweep = tokio::time::Instant::now() + Duration::from_secs(3600);
            }
            if shutdown.is_cancelled() {
                while in_flight.join_next().await.is_some() {}
                return;
            }
            // Claimed as many as were free: there may be more at once.
            if claimed > 0 && claimed == free {
                if in_flight.len() >= self.settings.concurrency {
                    in_flight.join_next().await;
                }
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                n = async { listener.as_mut().expect("guarded").recv().await }, if listener.is_some() => {
                    if let Err(e) = n {
                        tracing::debug!(error = %e, "the notification listener failed; polling until it is back");
                    }
                }
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Claims up to `n` due deliveries of enabled endpoints, the earliest
    /// pending one of each (endpoint, ordering key) only. The heads are
    /// found by skipping through the ordering index key by key (a loose
    /// index scan: one probe per key with anything pending), not by testing
    /// every pending row against its predecessors — a backlog behind a few
    /// busy articles made that scan the notifier's main cost.
    async fn claim(&self, n: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        sqlx::query_as(
            "with recursive heads as (
                 (select subscription_id, ordering_key, id from webhook_deliveries
                  where state = 'pending' order by subscription_id, ordering_key, id limit 1)
                 union all
                 select next.* from heads h, lateral (
                     select subscription_id, ordering_key, id from webhook_deliveries
                     where state = 'pending' and (subscription_id, ordering_key) > (h.subscription_id, h.ordering_key)
                     order by subscription_id, ordering_key, id limit 1) next
             ), due as (
                 select d.id from heads h
                 join webhook_deliveries d on d.id = h.id
                 join webhook_subscriptions s on s.id = d.subscription_id and s.enabled
                 where d.state = 'pending' and d.due_at <= now() and (d.lease_until is null or d.lease_until < now())
                 order by d.due_at, d.id
                 limit $1
                 for update of d skip locked)
             update webhook_deliveries d
             set lease_token = $2, lease_until = now() + $3 * interval '1 millisecond', attempts = d.attempts + 1
             from due, webhook_subscriptions s
             where d.id = due.id and s.id = d.subscription_id
             returning d.id, d.subscription_id, d.ordering_key, d.message_id, d.payload, d.traceparent, d.attempts,
                       d.lease_token, s.url, s.secret",
        )
        .bind(n as i64)
        .bind(Uuid::new_v4())
        .bind(self.lease().as_millis() as i64)
        .fetch_all(&self.pool)
        .await
    }

    /// The next delivery of the same endpoint and ordering key, once the one
    /// before it is settled: the new head when it is due and not held.
    /// Chaining keeps a busy article's deliveries going one after the other
    /// without waiting for the next claim round.
    async fn claim_next(&self, conn: &mut sqlx::PgConnection, after: &Claimed) -> Result<Option<Claimed>, sqlx::Error> {
        sqlx::query_as(
            "update webhook_deliveries d
             set lease_token = $3, lease_until = now() + $4 * interval '1 millisecond', attempts = d.attempts + 1
             from webhook_subscriptions s
             where d.id = (select min(id) from webhook_deliveries
                           where subscription_id = $1 and ordering_key = $2 and state = 'pending')
               and s.id = d.subscription_id and s.enabled and d.state = 'pending' and d.due_at <= now()
               and (d.lease_until is null or d.lease_until < now())
             returning d.id, d.subscription_id, d.ordering_key, d.message_id, d.payload, d.traceparent, d.attempts,
                       d.lease_token, s.url, s.secret",
        )
        .bind(after.subscription_id)
        .bind(&after.ordering_key)
        .bind(Uuid::new_v4())
        .bind(self.lease().as_millis() as i64)
        .fetch_optional(&mut *conn)
        .await
    }

    /// Sends a delivery and records how it went; then goes on with the next
    /// of its endpoint and ordering key while there is one due (not after shutdown).
    async fn chain(&self, first: Claimed, shutdown: CancellationToken) {
        let mut next = Some(first);
        while let Some(d) = next.take() {
            next = self.attempt(&d, !shutdown.is_cancelled()).await;
        }
    }

    /// Sends one delivery and records how it went; with `chain`, claims the
    /// next of its key in the same transaction and returns it.
    async fn attempt(&self, d: &Claimed, chain: bool) -> Option<Claimed> {
        let started = Utc::now();
        let clock = Instant::now();
        let outcome = self.send(d).await;
        let latency = clock.elapsed();
        let label = match &outcome {
            Outcome::Delivered(_) => "delivered",
            Outcome::Gone => "gone",
            Outcome::Failed { .. } if d.attempts as usize > self.schedule.len() => "failed",
            Outcome::Failed { .. } => "retry",
        };
        metrics::ATTEMPTS.with_label_values(&[label]).inc();
        metrics::LATENCY.with_label_values(&[label]).observe(latency.as_secs_f64());
        let trace_id = platform::trace::trace_id_of(d.traceparent.as_deref());
        tracing::info!(delivery = d.id, subscription = %d.subscription_id, attempt = d.attempts, status = ?outcome.status(), outcome = label, trace_id, "webhook attempt");
        let mut tries = 0;
        loop {
            match self.record(d, started, latency, &outcome, chain).await {
                Ok(next) => return next,
                Err(e) if tries < 20 => {
                    tries += 1;
                    tracing::warn!(error = %e, delivery = d.id, "recording an attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // The lease runs out and the delivery is sent again (same webhook-id).
                Err(e) => {
                    tracing::error!(error = %e, delivery = d.id, "could not record an attempt");
                    return None;
                }
            }
        }
    }

    async fn send(&self, d: &Claimed) -> Outcome {
        let Some(key) = sign::key(&d.secret) else {
            return Outcome::Failed { status: None, error: "the subscription's secret is not a whsec_ secret".into(), retry_after: None };
        };
        // Addresses written in the URL are not resolved: checked here; names by the resolver.
        if let Err(e) = crate::guard::check_url(&d.url, self.settings.allow_private_addresses) {
            return Outcome::Failed { status: None, error: e.to_string(), retry_after: None };
        }
        let timestamp = Utc::now().timestamp();
        let id = d.message_id.to_string();
        let mut request = self
            .client
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign::signature(&key, &id, timestamp, d.payload.as_bytes()));
        // Each attempt is a span of its own in the trace of what caused the message.
        if let Some(tp) = platform::trace::TraceParent::child_of(d.traceparent.as_deref()) {
            request = request.header(platform::trace::TRACEPARENT, tp);
        }
        match request.body(d.payload.clone()).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(retry_after);
                match status {
                    200..=299 => Outcome::Delivered(status),
                    410 => Outcome::Gone,
                    _ => Outcome::Failed {
                        status: Some(status),
                        error: format!("the endpoint answered {status}"),
                        retry_after: if matches!(status, 429 | 503) { retry_after } else { None },
                    },
                }
            }
            Err(e) => Outcome::Failed { status: None, error: describe(&e), retry_after: None },
        }
    }

    /// Writes the attempt and the delivery's next state, fenced by the lease
    /// token; with `chain`, claims the next delivery of the same key in the
    /// same transaction (one commit per delivery).
    async fn record(
        &self,
        d: &Claimed,
        started: chrono::DateTime<Utc>,
        latency: Duration,
        outcome: &Outcome,
        chain: bool,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        let (state, delay) = match outcome {
            Outcome::Delivered(_) => ("delivered", Duration::ZERO),
            Outcome::Gone => ("failed", Duration::ZERO),
            Outcome::Failed { retry_after, .. } => match self.schedule.get(d.attempts as usize - 1) {
                Some(step) => ("pending", (*step).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))),
                None => ("failed", Duration::ZERO),
            },
        };
        let mut tx = self.pool.begin().await?;
        let fenced = sqlx::query(
            "update webhook_deliveries
             set state = $3, due_at = case when $3 = 'pending' then now() + $4 * interval '1 millisecond' else due_at end,
                 last_status = $5, last_error = $6, lease_token = null, lease_until = null,
                 finished_at = case when $3 = 'pending' then null else now() end
             where id = $1 and attempts = $2 and lease_token = $7",
        )
        .bind(d.id)
        .bind(d.attempts)
        .bind(state)
        .bind(delay.as_millis() as i64)
        .bind(outcome.status())
        .bind(outcome.error())
        .bind(d.lease_token)
        .execute(&mut *tx)
        .await?;
        if fenced.rows_affected() == 0 {
            // Claimed again by another instance after this lease ran out: its attempt decides.
            tx.rollback().await?;
            return Ok(None);
        }
        sqlx::query(
            "insert into webhook_attempts (delivery_id, attempt, started_at, latency_ms, status, error, worker)
             values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
        )
        .bind(d.id)
        .bind(d.attempts)
        .bind(started)
        .bind(latency.as_millis().min(i32::MAX as u128) as i32)
        .bind(outcome.status())
        .bind(outcome.error())
        .bind(&self.name)
        .execute(&mut *tx)
        .await?;
        match outcome {
            Outcome::Delivered(_) => {
                sqlx::query("update webhook_subscriptions set failing_since = null where id = $1 and failing_since is not null")
                    .bind(d.subscription_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Outcome::Gone => {
                disable(&mut tx, d.subscription_id, "the endpoint answered 410 Gone").await?;
            }
            Outcome::Failed { .. } => {
                let bound = self.settings.disable_after_failing_secs as i64;
                let failing: (chrono::DateTime<Utc>,) = sqlx::query_as(
                    "update webhook_subscriptions set failing_since = coalesce(failing_since, now()) where id = $1 returning failing_since",
                )
                .bind(d.subscription_id)
                .fetch_one(&mut *tx)
                .await?;
                if (Utc::now() - failing.0).num_seconds() >= bound {
                    let reason = format!(
                        "every delivery failed since {} (longer than {bound} s); last: {}",
                        failing.0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        outcome.error().unwrap_or_default()
                    );
                    disable(&mut tx, d.subscription_id, &reason).await?;
                }
            }
        }
        let next = if chain { self.claim_next(&mut tx, d).await? } else { None };
        tx.commit().await?;
        Ok(next)
    }

    /// Deletes finished deliveries older than `keep_days`.
    async fn sweep(&self) -> Result<(), sqlx::Error> {
        sqlx::query("delete from webhook_deliveries where state <> 'pending' and finished_at < now() - $1 * interval '1 day'")
            .bind(i64::from(self.settings.keep_days))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn disable(tx: &mut sqlx::PgConnection, subscription: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    let done = sqlx::query(
        "update webhook_subscriptions set enabled = false, disabled_reason = $2, disabled_at = now(), updated_at = now()
         where id = $1 and enabled",
    )
    .bind(subscription)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() > 0 {
        tracing::warn!(%subscription, reason, "webhook endpoint disabled");
    }
    Ok(())
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// What went wrong with a request, with the cause (a refused address, a timeout).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() { "timed out".to_owned() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(80) && d <= Duration::from_secs(90), "{d:?}");
        assert_eq!(retry_after("soon"), None);
    }
}
