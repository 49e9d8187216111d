//! The submitter's side of the queue: submit, read, list, cancel, retry and
//! discard jobs. The command-service's `/jobs` resource calls these.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{JOB_COLUMNS, JOBS_CHANNEL, Job, JobRow, Rights, Status};
use crate::metrics::timed;

/// A job to submit.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub params: serde_json::Value,
    pub max_attempts: i32,
    pub submitter: String,
    pub rights: Rights,
    /// The submission's `Idempotency-Key`: a second submission with the same
    /// key by the same submitter names the first job.
    pub idempotency_key: Option<String>,
    /// Its input is still being uploaded: in phase `uploading`, not claimed
    /// until [`upload_done`].
    pub uploading: bool,
    /// The W3C `traceparent` the job continues (the submitting request's trace).
    pub traceparent: Option<String>,
}

/// What a submission came to.
#[derive(Debug)]
pub enum Submitted {
    /// A new job, queued (its transaction still open for its files).
    New(Job),
    /// The job submitted earlier with the same idempotency key.
    Existing(Job),
}

/// Inserts a job in `tx` (queued once `tx` commits) and announces it to the
/// workers on commit; or finds the job an earlier submission with the same
/// idempotency key created.
#[tracing::instrument(skip_all, fields(kind = %new.kind), err)]
pub async fn submit(tx: &mut PgConnection, id: Uuid, new: &NewJob) -> Result<Submitted, sqlx::Error> {
    let inserted: Option<JobRow> = timed(
        "job_submit",
        sqlx::query_as(&format!(
            "insert into jobs (id, kind, params, max_attempts, submitter, rights, idempotency_key, run_at, phase, traceparent)
             values ($1, $2, $3, $4, $5, $6, $7,
                     now(),
                     case when $8 then 'uploading' else 'queued' end, $9)
             on conflict (submitter, idempotency_key) where idempotency_key is not null do nothing
             returning {JOB_COLUMNS}"
        ))
        .bind(id)
        .bind(&new.kind)
        .bind(&new.params)
        .bind(new.max_attempts)
        .bind(&new.submitter)
        .bind(serde_json::to_value(&new.rights).expect("rights serialise"))
        .bind(&new.idempotency_key)
        .bind(new.uploading)
        .bind(&new.traceparent)
        .fetch_optional(&mut *tx),
    )
    .await?;
    if let Some(row) = inserted {
        if !new.uploading {
            sqlx::query("select pg_notify($1, $2)").bind(JOBS_CHANNEL).bind(&new.kind).execute(&mut *tx).await?;
        }
        return Ok(Submitted::New(row.into()));
    }
    let existing: JobRow = sqlx::query_as(&format!(
        "select {JOB_COLUMNS} from jobs where submitter = $1 and idempotency_key = $2"
    ))
    .bind(&new.submitter)
    .bind(&new.idempotency_key)
    .fetch_one(&mut *tx)
    .await?;
    Ok(Submitted::Existing(existing.into()))
}

/// Makes a job whose input is uploaded due, with its final parameters and
/// total; `false` when it was cancelled meanwhile.
pub async fn upload_done(tx: &mut PgConnection, id: Uuid, params: &serde_json::Value, total: i64) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "update jobs set params = $2, total = $3, run_at = now(), phase = 'queued', updated_at = now()
         where id = $1 and status = 'queued' and phase = 'uploading'",
    )
    .bind(id)
    .bind(params)
    .bind(total)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("select pg_notify($1, 'import')").bind(JOBS_CHANNEL).execute(&mut *tx).await?;
    Ok(true)
}

/// Marks an upload as still going (for [`sweep_uploads`]).
pub async fn upload_alive(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update jobs set updated_at = now() where id = $1").bind(id).execute(pool).await.map(|_| ())
}

/// Deletes a job whose upload was refused or broke off, with what was stored of it.
pub async fn abandon_upload(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from jobs where id = $1 and phase = 'uploading'").bind(id).execute(pool).await.map(|_| ())
}

/// Deletes uploads that stopped moving `idle` ago (their command-service
/// died mid-upload); the number deleted.
pub async fn sweep_uploads(pool: &PgPool, idle: std::time::Duration) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "delete from jobs where phase = 'uploading' and status = 'queued' and updated_at < now() - $1 * interval '1 millisecond'",
    )
    .bind(idle.as_millis() as i64)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// One job.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Job>, sqlx::Error> {
    let row: Option<JobRow> =
        timed("job_get", sqlx::query_as(&format!("select {JOB_COLUMNS} from jobs where id = $1")).bind(id).fetch_optional(pool))
            .await?;
    Ok(row.map(Job::from))
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub status: Option<Status>,
    pub submitter: Option<String>,
    /// Jobs created before this one (keyset pagination, newest first).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// Jobs matching `filter`, newest first.
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<Job>, sqlx::Error> {
    let (before_at, before_id) = filter.before.unzip();
    let rows: Vec<JobRow> = timed(
        "job_list",
        sqlx::query_as(&format!(
            "select {JOB_COLUMNS} from jobs
             where ($1::text is null or kind = $1) and ($2::text is null or status = $2)
               and ($3::text is null or submitter = $3)
               and ($4::timestamptz is null or (created_at, id) < ($4, $5))
             order by created_at desc, id desc limit $6"
        ))
        .bind(&filter.kind)
        .bind(filter.status.map(Status::as_str))
        .bind(&filter.submitter)
        .bind(before_at)
        .bind(before_id)
        .bind(filter.limit)
        .fetch_all(pool),
    )
    .await?;
    Ok(rows.into_iter().map(Job::from).collect())
}

/// Why a job could not be changed as asked.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no such job")]
    NotFound,
    /// The job's status does not allow it.
    #[error("the job is {}", .0.as_str())]
    Status(Status),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Cancels a job: a queued one at once; a running one is asked to stop and
/// stops at its worker's next heartbeat (`cancel_requested`, then status
/// cancelled).
pub async fn cancel(pool: &PgPool, id: Uuid) -> Result<Job, ChangeError> {
    change(
        pool,
        id,
        "update jobs set
             status = case when status = 'queued' then 'cancelled' else status end,
             finished_at = case when status = 'queued' then now() else finished_at end,
             phase = case when status = 'queued' then 'cancelled' else phase end,
             cancel_requested = status = 'running', updated_at = now()
         where id = $1 and status in ('queued', 'running')",
    )
    .await
}

/// Queues a dead, failed or cancelled job again with a fresh count of
/// attempts. An import goes on from its checkpoint: the lines it applied
/// stay applied once.
pub async fn retry(pool: &PgPool, id: Uuid) -> Result<Job, ChangeError> {
    let job = change(
        pool,
        id,
        "update jobs set status = 'queued', attempts = 0, run_at = now(), cancel_requested = false,
             finished_at = null, lease_token = null, lease_until = null, phase = 'queued', updated_at = now()
         where id = $1 and status in ('dead', 'failed', 'cancelled')",
    )
    .await?;
    sqlx::query("select pg_notify($1, $2)").bind(JOBS_CHANNEL).bind(&job.kind).execute(pool).await?;
    Ok(job)
}

/// Deletes a job that will not run again, with its files.
pub async fn discard(pool: &PgPool, id: Uuid) -> Result<(), ChangeError> {
    let deleted = sqlx::query("delete from jobs where id = $1 and status not in ('queued', 'running')")
        .bind(id)
        .execute(pool)
        .await?;
    if deleted.rows_affected() == 1 {
        return Ok(());
    }
    match get(pool, id).await? {
        Some(job) => Err(ChangeError::Status(job.status)),
        None => Err(ChangeError::NotFound),
    }
}

async fn change(pool: &PgPool, id: Uuid, update: &str) -> Result<Job, ChangeError> {
    let row: Option<JobRow> =
        sqlx::query_as(&format!("{update} returning {JOB_COLUMNS}")).bind(id).fetch_optional(pool).await?;
    match row {
        Some(row) => Ok(row.into()),
        None => match get(pool, id).await? {
            Some(job) => Err(ChangeError::Status(job.status)),
            None => Err(ChangeError::NotFound),
        },
    }
}

/// One attempt at a job, as the worker recorded it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `succeeded`, `failed`, `retry`, `dead`, `cancelled`, `lease-lost` or
    /// `released` (the worker shut down; not counted).
    pub outcome: String,
    pub error: Option<String>,
}

/// Every attempt at a job, in order.
pub async fn attempts(pool: &PgPool, id: Uuid) -> Result<Vec<Attempt>, sqlx::Error> {
    sqlx::query_as(
        "select attempt, worker, started_at, finished_at, outcome, error from job_attempts where job_id = $1 order by attempt, finished_at",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// A refused line of an import.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Rejection {
    pub line: i64,
    pub problem: String,
    pub field: Option<String>,
    pub detail: String,
}

/// The refused lines of an import after `after`, in line order (a page).
pub async fn rejections(pool: &PgPool, id: Uuid, after: i64, limit: i64) -> Result<Vec<Rejection>, sqlx::Error> {
    sqlx::query_as(
        "select line, problem, field, detail from job_rejections where job_id = $1 and line > $2 order by line limit $3",
    )
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}
