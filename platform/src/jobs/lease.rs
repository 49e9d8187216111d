//! The worker's side of the queue: claim a due job with a lease, renew it
//! while working, and finish it.
//!
//! The invariant: a job has at most one worker whose writes count. A claim
//! sets a fresh `lease_token`; every later write of that attempt — a
//! renewal, an import's checkpoint ([`fence`]), the finish — names the token
//! and changes nothing once another worker has claimed the job after the
//! lease ran out. A worker killed with SIGKILL stops renewing; its job is due
//! again when `lease_until` passes, and the next claim records the lost
//! attempt in `job_attempts`.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{JOB_COLUMNS, Job, JobRow, Rights, Status};
use crate::metrics::timed;

/// A job this worker holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    /// Names this attempt in every write it makes.
    pub token: Uuid,
    pub rights: Rights,
    /// Where the last attempt got to, for a kind that resumes.
    pub checkpoint: Option<serde_json::Value>,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    job: JobRow,
    rights: serde_json::Value,
    checkpoint: Option<serde_json::Value>,
}

/// Claims the oldest due job of one of `kinds`: queued and due, or running
/// with an expired lease (its worker died). `None` when there is none.
#[tracing::instrument(skip_all, err)]
pub async fn claim(pool: &PgPool, kinds: &[&str], worker: &str, lease: Duration) -> Result<Option<Claimed>, sqlx::Error> {
    let token = Uuid::new_v4();
    let sql = format!(
        "with due as (
             select id, status as was from jobs
             where kind = any($1)
               and ((status = 'queued' and run_at <= now() and phase <> 'uploading')
                    or (status = 'running' and lease_until < now()))
             order by run_at, created_at limit 1
             for update skip locked
         ), lost as (
             insert into job_attempts (job_id, attempt, worker, started_at, outcome, error)
             select j.id, j.attempts, coalesce(j.worker, ''), coalesce(j.attempt_started_at, now()), 'lease-lost',
                    'the worker stopped renewing its lease (killed, stopped or cut off)'
             from jobs j join due on j.id = due.id where due.was = 'running'
         )
         update jobs j set status = 'running', attempts = j.attempts + 1, lease_token = $2,
             lease_until = now() + $3 * interval '1 millisecond', worker = $4,
             started_at = coalesce(j.started_at, now()), attempt_started_at = now(),
             phase = 'starting', cancel_requested = false, updated_at = now()
         from due where j.id = due.id
         returning {}, j.rights, j.checkpoint",
        JOB_COLUMNS.split(", ").map(|c| format!("j.{c}")).collect::<Vec<_>>().join(", ")
    );
    let row: Option<ClaimedRow> = timed(
        "job_claim",
        sqlx::query_as(&sql).bind(kinds).bind(token).bind(lease.as_millis() as i64).bind(worker).fetch_optional(pool),
    )
    .await?;
    Ok(row.map(|r| Claimed {
        job: r.job.into(),
        token,
        rights: serde_json::from_value(r.rights).unwrap_or_default(),
        checkpoint: r.checkpoint,
    }))
}

/// Progress to record.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub done: Option<i64>,
    pub total: Option<i64>,
    pub phase: Option<String>,
    pub message: Option<String>,
}

/// Renews the lease and records `report`. `Some(cancel_requested)` while
/// the job is still this attempt's; `None` once the lease was lost.
pub async fn renew(pool: &PgPool, claimed: &Claimed, lease: Duration, report: &Report) -> Result<Option<bool>, sqlx::Error> {
    timed(
        "job_renew",
        sqlx::query_scalar(
            "update jobs set lease_until = now() + $3 * interval '1 millisecond', updated_at = now(),
                 done = coalesce($4, done), total = coalesce($5, total), phase = coalesce($6, phase),
                 message = coalesce($7, message)
             where id = $1 and lease_token = $2 and status = 'running'
             returning cancel_requested",
        )
        .bind(claimed.job.id)
        .bind(claimed.token)
        .bind(lease.as_millis() as i64)
        .bind(report.done)
        .bind(report.total)
        .bind(&report.phase)
        .bind(&report.message)
        .fetch_optional(pool),
    )
    .await
}

/// Inside a transaction that makes a job's work durable: checks that the
/// attempt still holds the job (locking its row until commit, so no other
/// worker can claim it meanwhile) and records `checkpoint` and progress
/// with the work. `false`: the lease was lost; roll back.
pub async fn fence(
    tx: &mut PgConnection,
    claimed: &Claimed,
    checkpoint: Option<&serde_json::Value>,
    report: &Report,
) -> Result<bool, sqlx::Error> {
    let updated = timed(
        "job_fence",
        sqlx::query(
            "update jobs set checkpoint = coalesce($3, checkpoint), updated_at = now(),
                 done = coalesce($4, done), total = coalesce($5, total), phase = coalesce($6, phase),
                 message = coalesce($7, message)
             where id = $1 and lease_token = $2 and status = 'running'",
        )
        .bind(claimed.job.id)
        .bind(claimed.token)
        .bind(checkpoint)
        .bind(report.done)
        .bind(report.total)
        .bind(&report.phase)
        .bind(&report.message)
        .execute(&mut *tx),
    )
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded(serde_json::Value),
    /// Its input is bad: final, no retry.
    Failed(String),
    Cancelled,
    /// Something transient went wrong: again after `delay`, or dead when
    /// the attempts are used up.
    Retry { error: String, delay: Duration },
    /// The worker is shutting down: queued again at once, the attempt not counted.
    Released,
}

/// Ends the attempt (in `tx`, so that a result file and the finish commit
/// together) and records it in `job_attempts`. Returns the job's new
/// status, or `None` when the lease was lost (nothing written).
pub async fn finish(tx: &mut PgConnection, claimed: &Claimed, worker: &str, outcome: &Outcome) -> Result<Option<Status>, sqlx::Error> {
    let (status_sql, result, error, delay_ms) = match outcome {
        Outcome::Succeeded(result) => ("'succeeded'", Some(result.clone()), None, 0),
        Outcome::Failed(e) => ("'failed'", None, Some(e.clone()), 0),
        Outcome::Cancelled => ("'cancelled'", None, None, 0),
        Outcome::Retry { error, delay } => (
            "case when attempts >= max_attempts then 'dead' else 'queued' end",
            None,
            Some(error.clone()),
            delay.as_millis() as i64,
        ),
        Outcome::Released => ("'queued'", None, Some("the worker shut down; queued again".to_owned()), 0),
    };
    let released = matches!(outcome, Outcome::Released);
    let sql = format!(
        "update jobs set status = {status_sql}, result = coalesce($3, result), error = $4,
             done = case when {status_sql} = 'succeeded' then coalesce(total, done) else done end,
             run_at = case when {status_sql} = 'queued' then now() + $5 * interval '1 millisecond' else run_at end,
             finished_at = case when {status_sql} = 'queued' then null else now() end,
             phase = case when {status_sql} = 'queued' then 'waiting to retry' else {status_sql} end,
             attempts = case when $6 then attempts - 1 else attempts end,
             lease_token = null, lease_until = null, updated_at = now()
         where id = $1 and lease_token = $2 and status = 'running'
         returning status, attempt_started_at"
    );
    let row: Option<(String, Option<chrono::DateTime<chrono::Utc>>)> = timed(
        "job_finish",
        sqlx::query_as(&sql)
            .bind(claimed.job.id)
            .bind(claimed.token)
            .bind(result)
            .bind(&error)
            .bind(delay_ms)
            .bind(released)
            .fetch_optional(&mut *tx),
    )
    .await?;
    let Some((status, started)) = row else { return Ok(None) };
    let status = Status::parse(&status).expect("the table's check constraint");
    let recorded = match (outcome, status) {
        (Outcome::Retry { .. }, Status::Dead) => "dead",
        (Outcome::Retry { .. }, _) => "retry",
        (Outcome::Released, _) => "released",
        _ => status.as_str(),
    };
    sqlx::query(
        "insert into job_attempts (job_id, attempt, worker, started_at, outcome, error) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(claimed.job.id)
    .bind(claimed.job.attempts)
    .bind(worker)
    .bind(started.unwrap_or_else(chrono::Utc::now))
    .bind(recorded)
    .bind(&error)
    .execute(&mut *tx)
    .await?;
    if status.is_final() {
        notify_finished(tx, &claimed.job, status, &error).await?;
    }
    Ok(Some(status))
}

/// Leaves a `job_finished` (or `job_dead`) notification for the webhook
/// subscribers (the notifier takes `notify_inbox`), in the transaction that
/// finishes the job: one per job ending, whatever crashes.
async fn notify_finished(tx: &mut PgConnection, job: &Job, status: Status, error: &Option<String>) -> Result<(), sqlx::Error> {
    let name = if status == Status::Dead { "job_dead" } else { "job_finished" };
    let data = serde_json::json!({
        "job": job.id, "kind": job.kind, "status": status.as_str(), "attempts": job.attempts,
        "submitter": job.submitter, "error": error,
    });
    sqlx::query(
        "insert into notify_inbox (message_id, event_type, subject, owner, data, traceparent)
         values ($1, $2, $3, $4, $5, $6)",
    )
    // One id per ending (a dead job retried by hand ends again, later).
    .bind(Uuid::new_v5(&job.id, format!("{name}:{}", job.attempts).as_bytes()))
    .bind(name)
    .bind(format!("job:{}", job.id))
    .bind(&job.submitter)
    .bind(data)
    .bind(&job.traceparent)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The delay before retry number `attempt` (1 after the first failure):
/// `base` doubled per attempt up to `cap`, of which a random half is
/// taken off ("equal jitter"), so that jobs failing together do not all
/// come back at the same moment, yet each waits at least half its step.
pub fn backoff(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let step = base.saturating_mul(1 << attempt.clamp(1, 20).saturating_sub(1) as u32).min(cap);
    let random = (Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
    step.mul_f64(0.5 + random / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_within_half_to_whole_step_and_stops_at_the_cap() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        for _ in 0..200 {
            for (attempt, step) in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 32), (6, 60), (12, 60)] {
                let d = backoff(attempt, base, cap);
                let step = Duration::from_secs(step);
                assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?} outside [{:?}, {step:?}]", step / 2);
            }
        }
    }
}
