//! Prometheus metrics shared by every service, and `/metrics`.
//!
//! Each thing worth counting has one place that both logs it (when it is worth
//! a log line) and bumps its metric: [`record_request`] for requests, [`timed`]
//! for database queries. Route labels are route templates
//! (`/articles/{article}/stock`), never raw paths, so cardinality is bounded.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The registry every metric of this process is in, with the process's CPU,
/// memory and file descriptors (`process_*`).
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let registry = Registry::new();
    let process = prometheus::process_collector::ProcessCollector::for_self();
    registry.register(Box::new(process)).expect("process metrics register once");
    registry
});

/// Registers a metric in the registry `/metrics` serves (also for the
/// services' own metrics modules).
pub fn register<T: prometheus::core::Collector + Clone + 'static>(metric: T) -> T {
    REGISTRY.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

/// Latency buckets from 0.5 ms to 10 s.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// HTTP requests by route template, method and status.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("erp_http_requests_total", "HTTP requests by route template, method and status"),
            &["route", "method", "status"],
        )
        .expect("valid metric"),
    )
});

/// HTTP request latency by route template and method.
pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new("erp_http_request_duration_seconds", "HTTP request latency by route template")
                .buckets(BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric"),
    )
});

/// Database statements by name (the planning documents' `erp_db_query_count`).
pub static DB_QUERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(Opts::new("erp_db_query_count", "Database statements by query name and outcome"), &[
            "query", "outcome",
        ])
        .expect("valid metric"),
    )
});

/// Database statement latency by name.
pub static DB_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new("erp_db_query_duration_seconds", "Database statement latency by query name")
                .buckets(BUCKETS.to_vec()),
            &["query"],
        )
        .expect("valid metric"),
    )
});

/// Statements slower than the slow-query threshold, by name.
pub static DB_SLOW: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(Opts::new("erp_db_slow_queries_total", "Statements over the slow-query threshold"), &[
            "query",
        ])
        .expect("valid metric"),
    )
});

/// Pool connections by state (`in_use`, `idle`), read at scrape time.
pub static DB_POOL: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(Opts::new("erp_db_pool_connections", "Pooled PostgreSQL connections by state"), &["state"])
            .expect("valid metric"),
    )
});

static SLOW_QUERY_THRESHOLD: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Sets the slow-query threshold (default 1 s); call once at start.
pub fn set_slow_query_threshold(threshold: Duration) {
    let _ = SLOW_QUERY_THRESHOLD.set(threshold);
}

/// Runs a database call named `query`, counting it, timing it, and logging and
/// counting it as slow when it takes longer than the threshold.
pub async fn timed<T, E>(query: &'static str, call: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let start = Instant::now();
    let result = call.await;
    let elapsed = start.elapsed();
    DB_QUERIES.with_label_values(&[query, if result.is_ok() { "ok" } else { "error" }]).inc();
    DB_DURATION.with_label_values(&[query]).observe(elapsed.as_secs_f64());
    if elapsed > *SLOW_QUERY_THRESHOLD.get_or_init(|| Duration::from_secs(1)) {
        DB_SLOW.with_label_values(&[query]).inc();
        tracing::warn!(query, duration_ms = elapsed.as_millis() as u64, "slow query");
    }
    result
}

/// Counts and times a request by its route template (called by
/// [`crate::http::Observe`] for every request).
///
/// The series of each (route, method, status) are resolved once per thread:
/// a label lookup hashes every label and takes a lock, which a request served
/// from memory noticed.
pub fn record_request(route: &str, method: &str, status: axum::http::StatusCode, elapsed: Duration) {
    type Series = ((String, String, u16), prometheus::Histogram, prometheus::IntCounter);
    // Route templates and methods are few; a client inventing methods cannot grow this past it.
    const MOST: usize = 256;
    thread_local! {
        static RESOLVED: std::cell::RefCell<Vec<Series>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    RESOLVED.with_borrow_mut(|resolved| {
        let key = (route, method, status.as_u16());
        let position = resolved.iter().position(|((r, m, s), ..)| (r.as_str(), m.as_str(), *s) == key);
        let (_, duration, count) = match position {
            Some(i) => &resolved[i],
            None => {
                let duration = HTTP_DURATION.with_label_values(&[route, method]);
                let count = HTTP_REQUESTS.with_label_values(&[route, method, status.as_str()]);
                if resolved.len() >= MOST {
                    duration.observe(elapsed.as_secs_f64());
                    count.inc();
                    return;
                }
                resolved.push(((route.to_owned(), method.to_owned(), key.2), duration, count));
                resolved.last().expect("just pushed")
            }
        };
        duration.observe(elapsed.as_secs_f64());
        count.inc();
    });
}

/// `/metrics` in the Prometheus text format; `refresh` updates gauges read at
/// scrape time (e.g. the pool's connections).
pub fn router(refresh: impl Fn() + Clone + Send + Sync + 'static) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let refresh = refresh.clone();
            async move {
                refresh();
                let mut body = Vec::new();
                TextEncoder::new().encode(&REGISTRY.gather(), &mut body).expect("metrics encode");
                ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response()
            }
        }),
    )
}

/// Sets the pool gauges from `pool`.
pub fn observe_pool(pool: &sqlx::PgPool) {
    let idle = pool.num_idle() as i64;
    DB_POOL.with_label_values(&["idle"]).set(idle);
    DB_POOL.with_label_values(&["in_use"]).set(pool.size() as i64 - idle);
}

/// Kafka produce latency (enqueue to acknowledgement), outbox relay.
pub static KAFKA_PRODUCE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new("erp_kafka_produce_duration_seconds", "Kafka produce latency, enqueue to acknowledgement")
                .buckets(BUCKETS.to_vec()),
            &["topic"],
        )
        .expect("valid metric"),
    )
});

/// Failed Kafka produces.
pub static KAFKA_PRODUCE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(Opts::new("erp_kafka_produce_errors_total", "Failed Kafka produces"), &["topic"])
            .expect("valid metric"),
    )
});

/// Outbox rows not yet relayed (sampled by the relaying instance).
pub static OUTBOX_BACKLOG: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(prometheus::IntGauge::new("erp_outbox_backlog", "Outbox rows not yet relayed").expect("valid metric"))
});

/// Age of the oldest unrelayed outbox row, in seconds.
pub static OUTBOX_OLDEST_AGE: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    register(
        prometheus::Gauge::new("erp_outbox_oldest_age_seconds", "Age of the oldest unrelayed event").expect("valid metric"),
    )
});

/// Events applied by the projector, by type.
pub static EVENTS_APPLIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(Opts::new("erp_events_applied_total", "Events applied to the read models, by type"), &["type"])
            .expect("valid metric"),
    )
});

/// Events the projector skipped: `duplicate` (already applied) or `gap` (an earlier one missing).
pub static EVENTS_SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(Opts::new("erp_events_skipped_total", "Events skipped by the projector, by reason"), &[
            "reason",
        ])
        .expect("valid metric"),
    )
});

/// Records the projector could not apply.
pub static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(Opts::new("erp_dead_letters_total", "Records the projector could not apply, by reason"), &[
            "reason",
        ])
        .expect("valid metric"),
    )
});

/// Streams waiting behind a parked (poison) record.
pub static HALTED_STREAMS: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new("erp_projector_halted_streams", "Streams waiting behind a parked poison record")
            .expect("valid metric"),
    )
});

/// Projector lag per partition in offsets (end of the partition minus position).
pub static PROJECTOR_LAG_OFFSETS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(Opts::new("erp_projector_lag_offsets", "Records behind the end of the partition"), &[
            "partition",
        ])
        .expect("valid metric"),
    )
});

/// Projector lag per partition in seconds (0 when caught up).
pub static PROJECTOR_LAG_SECONDS: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    register(
        prometheus::GaugeVec::new(
            Opts::new("erp_projector_lag_seconds", "Age of the last applied record while behind; 0 when caught up"),
            &["partition"],
        )
        .expect("valid metric"),
    )
});

/// Partitions of the events topic this projector instance owns (applies).
pub static PROJECTOR_PARTITIONS_OWNED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new("erp_projector_partitions_owned", "Partitions of the events topic this instance applies")
            .expect("valid metric"),
    )
});

/// Partitions of the events topic no projector instance owns (nobody applies them).
pub static PROJECTOR_PARTITIONS_UNOWNED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new("erp_projector_partitions_unowned", "Partitions of the events topic no instance applies")
            .expect("valid metric"),
    )
});

/// How long this projector instance has been behind without applying anything.
pub static PROJECTOR_STALLED_SECONDS: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    register(
        prometheus::Gauge::new(
            "erp_projector_stalled_seconds",
            "Seconds this instance has been behind an owned partition's end without committing a batch; 0 when not behind",
        )
        .expect("valid metric"),
    )
});

/// Cache lookups by tier (`memory`, `redis`, `postgres`) and result (`hit`, `miss`).
pub static CACHE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(Opts::new("erp_cache_requests_total", "Document lookups by tier and result"), &[
            "tier", "result",
        ])
        .expect("valid metric"),
    )
});

/// Whether the query-service's Redis circuit breaker is open (1): Redis
/// failed repeatedly and is skipped, so every cold read goes to PostgreSQL.
pub static REDIS_BREAKER_OPEN: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new("erp_redis_breaker_open", "1 while the Redis circuit breaker is open (Redis skipped), else 0")
            .expect("valid metric"),
    )
});

/// Invalidation tags received, and entries dropped for size.
pub static CACHE_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(Opts::new("erp_cache_events_total", "Cache invalidations and evictions"), &["event"])
            .expect("valid metric"),
    )
});

/// Entries and bytes held by the in-process tier.
pub static CACHE_SIZE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(Opts::new("erp_cache_memory", "In-process cache size"), &["measure"]).expect("valid metric"),
    )
});
