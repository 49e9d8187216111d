//! The notifier's metrics. Counters are counted where things happen; the
//! gauges of the deliveries and endpoints are sampled from the tables every
//! few seconds ([`sample`]). The alert rules (deploy/prometheus/alerts.yml)
//! read `erp_webhook_endpoints`, `erp_webhook_oldest_pending_seconds` and
//! `erp_webhook_deliveries_total`.

use std::sync::LazyLock;

use platform::metrics::register;
use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts};
use sqlx::PgPool;

/// Delivery attempts by outcome: delivered, retry, failed (schedule ran out), gone (410).
pub static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("erp_webhook_deliveries_total", "Webhook delivery attempts by outcome (delivered, retry, failed, gone)"),
            &["outcome"],
        )
        .expect("valid metric"),
    )
});

/// How long the receivers took to answer.
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new("erp_webhook_delivery_duration_seconds", "Time from sending a webhook to its answer, by outcome")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["outcome"],
        )
        .expect("valid metric"),
    )
});

/// Deliveries by state (sampled).
pub static DELIVERIES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(IntGaugeVec::new(Opts::new("erp_webhook_deliveries", "Webhook deliveries by state"), &["state"]).expect("valid metric"))
});

/// Age of the oldest pending delivery of an enabled endpoint that is due.
pub static OLDEST_PENDING: LazyLock<Gauge> = LazyLock::new(|| {
    register(
        Gauge::new("erp_webhook_oldest_pending_seconds", "Age of the oldest due delivery to an enabled endpoint (0: none)")
            .expect("valid metric"),
    )
});

/// Endpoints by state: enabled, failing (enabled, last attempt failed), disabled.
pub static ENDPOINTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(Opts::new("erp_webhook_endpoints", "Webhook subscriptions by state (enabled, failing, disabled)"), &["state"])
            .expect("valid metric"),
    )
});

/// Topic records the intake took (each once, whichever instance took it).
pub static INTAKE_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new("erp_notifier_intake_records_total", "Records of the events topic taken by the intake").expect("valid metric"))
});

/// Deliveries the intake wrote.
pub static DELIVERIES_WRITTEN: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new("erp_notifier_deliveries_written_total", "Webhook deliveries written by the intake").expect("valid metric"))
});

/// Records that were not events (the projector parks them).
pub static SKIPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new("erp_notifier_skipped_total", "Records of the events topic that are not events").expect("valid metric"))
});

/// Reads the gauges from the tables.
pub async fn sample(pool: &PgPool) -> Result<(), sqlx::Error> {
    let states: Vec<(String, i64)> = sqlx::query_as(
        "select s, (select count(*) from webhook_deliveries where state = s) from unnest(array['pending', 'delivered', 'failed']) s",
    )
    .fetch_all(pool)
    .await?;
    for (state, n) in states {
        DELIVERIES.with_label_values(&[&state]).set(n);
    }
    let (oldest,): (f64,) = sqlx::query_as(
        "select coalesce(extract(epoch from now() - min(d.due_at))::float8, 0)
         from webhook_deliveries d join webhook_subscriptions s on s.id = d.subscription_id and s.enabled
         where d.state = 'pending' and d.due_at <= now()",
    )
    .fetch_one(pool)
    .await?;
    OLDEST_PENDING.set(oldest.max(0.0));
    let (enabled, failing, disabled): (i64, i64, i64) = sqlx::query_as(
        "select count(*) filter (where enabled), count(*) filter (where enabled and failing_since is not null),
                count(*) filter (where not enabled)
         from webhook_subscriptions",
    )
    .fetch_one(pool)
    .await?;
    ENDPOINTS.with_label_values(&["enabled"]).set(enabled);
    ENDPOINTS.with_label_values(&["failing"]).set(failing);
    ENDPOINTS.with_label_values(&["disabled"]).set(disabled);
    Ok(())
}
