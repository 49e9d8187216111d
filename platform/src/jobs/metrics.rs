//! The job metrics: one place that logs and counts how attempts end
//! ([`attempt_ended`]), and the queue gauges the worker samples from the
//! table ([`sample`]). The alert rules (deploy/prometheus/alerts.yml) read
//! `erp_jobs`, `erp_jobs_oldest_due_seconds` and `erp_job_attempts_total`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use sqlx::PgPool;

use super::Status;
use crate::metrics::register;

/// Jobs by kind and status (sampled from the table).
pub static JOBS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(IntGaugeVec::new(Opts::new("erp_jobs", "Jobs by kind and status"), &["kind", "status"]).expect("valid metric"))
});

/// How long the oldest due, unclaimed job of a kind has waited (0: none waits).
pub static OLDEST_DUE: LazyLock<GaugeVec> = LazyLock::new(|| {
    register(
        GaugeVec::new(
            Opts::new("erp_jobs_oldest_due_seconds", "Age of the oldest job that is due and not running, by kind"),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

/// Attempts by kind and how they ended.
pub static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "erp_job_attempts_total",
                "Job attempts by kind and outcome (succeeded, failed, cancelled, retry, dead, lease-lost)",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric"),
    )
});

/// How long attempts took.
pub static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new("erp_job_duration_seconds", "Duration of job attempts by kind and outcome")
                .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
            &["kind", "outcome"],
        )
        .expect("valid metric"),
    )
});

/// Import lines by outcome (accepted, rejected).
pub static LINES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(Opts::new("erp_import_lines_total", "Import lines decided, by outcome"), &["outcome"])
            .expect("valid metric"),
    )
});

/// Logs and counts the end of an attempt.
pub fn attempt_ended(kind: &str, job: uuid::Uuid, outcome: &str, took: Duration, error: Option<&str>) {
    ATTEMPTS.with_label_values(&[kind, outcome]).inc();
    DURATION.with_label_values(&[kind, outcome]).observe(took.as_secs_f64());
    match outcome {
        "succeeded" | "cancelled" => tracing::info!(%job, kind, outcome, took_ms = took.as_millis() as u64, "job attempt ended"),
        "dead" => tracing::error!(%job, kind, outcome, error, "job is dead: every attempt failed"),
        _ => tracing::warn!(%job, kind, outcome, error, "job attempt failed"),
    }
}

/// Sets the queue gauges from the table.
pub async fn sample(pool: &PgPool, kinds: &[&str]) -> Result<(), sqlx::Error> {
    let counts: Vec<(String, String, i64)> =
        sqlx::query_as("select kind, status, count(*) from jobs group by kind, status").fetch_all(pool).await?;
    for kind in kinds {
        for status in Status::ALL {
            let n = counts.iter().find(|(k, s, _)| k == kind && s == status.as_str()).map_or(0, |c| c.2);
            JOBS.with_label_values(&[kind, status.as_str()]).set(n);
        }
    }
    let oldest: Vec<(String, f64)> = sqlx::query_as(
        "select kind, extract(epoch from now() - min(run_at))::float8 from jobs
         where status = 'queued' and run_at <= now() and phase <> 'uploading' group by kind",
    )
    .fetch_all(pool)
    .await?;
    for kind in kinds {
        let age = oldest.iter().find(|(k, _)| k == kind).map_or(0.0, |o| o.1);
        OLDEST_DUE.with_label_values(&[kind]).set(age);
    }
    Ok(())
}
