//! The job queue: table `jobs` and its files (migration `..._jobs.sql`).
//! The command-service submits, lists, cancels, retries and discards jobs
//! ([`queue`]); the worker claims them, renews their lease and finishes
//! them ([`lease`]); both read and write job files ([`files`]).
//!
//! Why not a queue library: graphile_worker needs sqlx 0.9 (a second sqlx
//! and PostgreSQL driver in this build, or the whole workspace moved for it);
//! apalis (1.0 release candidates at the time of writing) keeps its own job
//! table with its own states. Neither holds what the jobs here need in the
//! row — progress, a checkpoint written in the import's own transaction, a
//! result file, a cancel request, the submitter's rights — so a library would
//! have meant two tables to keep in step. What a queue library does for us is
//! one `update ... for update skip locked` (the claim) and a lease; both are
//! in [`lease`], with the fence that makes an import exactly-once: every
//! write a job makes checks the lease token it was claimed with.

pub mod files;
pub mod lease;
pub mod metrics;
pub mod queue;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a job's changes are announced (`NOTIFY`), so that idle workers
/// claim a new job at once instead of at their next poll.
pub const JOBS_CHANNEL: &str = "erp_jobs";

/// A job's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting to run, or waiting for a retry (`run_at` in the future, `error` set).
    Queued,
    /// Held by a worker.
    Running,
    /// Done; `result` says what came of it.
    Succeeded,
    /// Stopped by its input (a bad file): running it again would fail the same way.
    Failed,
    /// Cancelled by its submitter or an admin.
    Cancelled,
    /// Every attempt failed on something transient: retry or discard it by hand.
    Dead,
}

impl Status {
    pub const ALL: [Status; 6] =
        [Status::Queued, Status::Running, Status::Succeeded, Status::Failed, Status::Cancelled, Status::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether the job will not run again unless retried by hand.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }
}

/// What a job may do: the roles and warehouses of the principal that
/// submitted it, kept with the job so that it acts with the submitter's
/// rights, not the worker's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    pub roles: Vec<String>,
    /// `None`: every warehouse.
    pub warehouses: Option<Vec<String>>,
}

impl Rights {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// How far a job has come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// Units done: lines of an import, rows of a report.
    pub done: i64,
    /// Units in all, once known.
    pub total: Option<i64>,
    /// What it is doing: `queued`, `reading`, `importing`, `writing`, `finished`, ...
    pub phase: String,
    pub message: Option<String>,
    /// `done / total` in per cent, once the total is known.
    pub percent: Option<f64>,
}

/// A job as its submitter sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    /// `import`, `report`, `export` or `selftest`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub status: Status,
    pub attempts: i32,
    pub max_attempts: i32,
    /// When it runs next (a retry's time after a failure).
    pub run_at: DateTime<Utc>,
    pub progress: Progress,
    /// What came of it: counts, and the files to download.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The last attempt's error.
    pub error: Option<String>,
    pub cancel_requested: bool,
    /// The principal that submitted it (`api_key:<name>`, `user:<sub>`).
    pub submitter: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The W3C `traceparent` the job continues: the submitting request's
    /// trace, which the worker's spans and the events an import writes carry.
    pub traceparent: Option<String>,
}

impl TryFrom<String> for Status {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Status::parse(&s).ok_or_else(|| format!("unknown job status {s:?}"))
    }
}

/// A row of `jobs` as [`JOB_COLUMNS`] reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: Uuid,
    kind: String,
    params: serde_json::Value,
    #[sqlx(try_from = "String")]
    status: Status,
    attempts: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    result: Option<serde_json::Value>,
    error: Option<String>,
    cancel_requested: bool,
    submitter: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    done: i64,
    total: Option<i64>,
    phase: String,
    message: Option<String>,
    traceparent: Option<String>,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        let percent = r.total.filter(|t| *t > 0).map(|t| (r.done as f64 * 100.0 / t as f64).min(100.0));
        Job {
            id: r.id,
            kind: r.kind,
            params: r.params,
            status: r.status,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            run_at: r.run_at,
            progress: Progress { done: r.done, total: r.total, phase: r.phase, message: r.message, percent },
            result: r.result,
            error: r.error,
            cancel_requested: r.cancel_requested,
            submitter: r.submitter,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
            traceparent: r.traceparent,
        }
    }
}

/// The columns [`JobRow`] reads.
pub(crate) const JOB_COLUMNS: &str = "id, kind, params, status, attempts, max_attempts, run_at, result, error, \
     cancel_requested, submitter, created_at, started_at, finished_at, updated_at, done, total, phase, message, traceparent";
