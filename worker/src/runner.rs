//! Claiming and running jobs. The loop claims a due job of every kind that
//! has a free slot (`APP_JOBS__CONCURRENCY`), then waits for a
//! notification of a new job, a freed slot or the poll interval. Each
//! claimed job runs as an attempt beside its heartbeat, which renews the
//! lease, stores the progress and passes a cancel request, a lost lease or
//! the worker's shutdown on to the job through its [`Control`]. A job's
//! kind decides at which points it stops (an import between chunks).
//!
//! How an attempt ends decides what is written ([`platform::jobs::lease::finish`]):
//! a result (with its file, in the same transaction), a failure of the
//! input (final), a transient failure (again after a backoff, dead when
//! the attempts are used up), a cancel; after a lost lease nothing at all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events::Policy;
use platform::jobs::files::Writer;
use platform::jobs::lease::{self, Claimed, Outcome, Report};
use platform::jobs::{JOBS_CHANNEL, Status, metrics};
use platform::shutdown::CancellationToken;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::settings::WorkerSettings;

/// Why a job was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    LeaseLost,
    Shutdown,
}

/// What a running job reads and reports through.
#[derive(Debug, Default)]
pub struct Control {
    stop: CancellationToken,
    why: Mutex<Option<Stop>>,
    report: Mutex<Report>,
}

impl Control {
    /// Records progress; stored at the next heartbeat.
    pub fn progress(&self, done: i64, total: Option<i64>, phase: &str) {
        let mut r = self.report.lock().expect("not poisoned");
        r.done = Some(done);
        if total.is_some() {
            r.total = total;
        }
        r.phase = Some(phase.to_owned());
    }

    /// Why the job must stop, if it must.
    pub fn stopped(&self) -> Option<Stop> {
        *self.why.lock().expect("not poisoned")
    }

    /// Resolves when the job must stop.
    pub async fn until_stopped(&self) {
        self.stop.cancelled().await
    }

    fn tell(&self, why: Stop) {
        let mut w = self.why.lock().expect("not poisoned");
        if w.is_none() {
            *w = Some(why);
        }
        self.stop.cancel();
    }

    fn take_report(&self) -> Report {
        std::mem::take(&mut *self.report.lock().expect("not poisoned"))
    }
}

/// How a job's work ended.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The input cannot be used: the job fails without a retry.
    #[error("{0}")]
    Input(String),
    /// Something that may pass: retried after a backoff.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
    /// Told to stop ([`Control::stopped`] says why).
    #[error("stopped")]
    Stopped,
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Transient(e.into())
    }
}

/// A finished job's result, and its file.
#[derive(Debug)]
pub struct Finished {
    pub result: serde_json::Value,
    pub file: Option<ResultFile>,
}

/// A file written to scratch space, stored with the job's finish.
#[derive(Debug)]
pub struct ResultFile {
    pub path: PathBuf,
    pub content_type: &'static str,
}

/// What every attempt can reach.
#[derive(Debug)]
pub struct Runner {
    pub pool: PgPool,
    pub settings: WorkerSettings,
    pub name: String,
    pub policy: Policy,
    slots: BTreeMap<String, Arc<Semaphore>>,
    /// When the loop last went round (ms since the epoch): readiness.
    pub alive: Arc<AtomicI64>,
}

impl Runner {
    pub fn new(pool: PgPool, settings: WorkerSettings, policy: Policy) -> anyhow::Result<Self> {
        let slots = settings.slots()?.into_iter().map(|(k, n)| (k, Arc::new(Semaphore::new(n)))).collect();
        let name = settings.worker_name();
        Ok(Self { pool, settings, name, policy, slots, alive: Arc::new(AtomicI64::new(0)) })
    }

    /// Claims and runs jobs until `shutdown`; then tells the running ones
    /// to stop and waits for them to put their jobs back.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut listener = None;
        let mut tasks = JoinSet::new();
        let poll = Duration::from_millis(self.settings.poll_ms);
        let mut sampled = Instant::now() - Duration::from_secs(60);
        let mut swept = Instant::now() - Duration::from_secs(3600);
        tracing::info!(worker = %self.name, concurrency = %self.settings.concurrency, "worker running");
        while !shutdown.is_cancelled() {
            self.alive.store(chrono::Utc::now().timestamp_millis(), Ordering::Release);
            if listener.is_none() {
                listener = listen(&self.pool).await;
            }
            self.claim_all(&mut tasks, &shutdown).await;
            if sampled.elapsed() >= Duration::from_secs(5) {
                let kinds: Vec<&str> = self.slots.keys().map(String::as_str).collect();
                if let Err(e) = metrics::sample(&self.pool, &kinds).await {
                    tracing::warn!(error = %e, "cannot sample the job queue");
                }
                sampled = Instant::now();
            }
            if swept.elapsed() >= Duration::from_secs(60) {
                // An upload whose command-service died stops moving: after
                // an hour it is deleted with its chunks.
                match platform::jobs::queue::sweep_uploads(&self.pool, Duration::from_secs(3600)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(uploads = n, "deleted uploads that broke off an hour ago"),
                    Err(e) => tracing::warn!(error = %e, "cannot sweep broken-off uploads"),
                }
                swept = Instant::now();
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(poll) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                notified = recv(&mut listener) => if !notified { listener = None },
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!(worker = %self.name, "worker stopped");
    }

    /// Claims due jobs while a kind has a free slot.
    async fn claim_all(self: &Arc<Self>, tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
        loop {
            let free: Vec<&str> =
                self.slots.iter().filter(|(_, s)| s.available_permits() > 0).map(|(k, _)| k.as_str()).collect();
            if free.is_empty() {
                return;
            }
            let claimed = match lease::claim(&self.pool, &free, &self.name, self.settings.lease()).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim a job");
                    return;
                }
            };
            let permit = self.slots[&claimed.job.kind].clone().try_acquire_owned().expect("the kind had a free slot");
            // The attempt's logs carry the trace the job was submitted in.
            let trace_id = platform::trace::trace_id_of(claimed.job.traceparent.as_deref());
            let span = tracing::info_span!("job", job = %claimed.job.id, kind = %claimed.job.kind, trace_id);
            tasks.spawn(tracing::Instrument::instrument(self.clone().attempt(claimed, permit, shutdown.clone()), span));
        }
    }

    /// One attempt at a claimed job, beside its heartbeat.
    async fn attempt(self: Arc<Self>, claimed: Claimed, _permit: OwnedSemaphorePermit, shutdown: CancellationToken) {
        let started = Instant::now();
        let kind = claimed.job.kind.clone();
        tracing::info!(job = %claimed.job.id, kind, attempt = claimed.job.attempts, "job claimed");
        if claimed.job.attempts > claimed.job.max_attempts {
            // Its workers died during every attempt (the last claim found its lease expired).
            let error = format!("gave up after {} attempts; the last one's worker stopped renewing its lease", claimed.job.max_attempts);
            self.finish(&claimed, Outcome::Retry { error, delay: Duration::ZERO }, None, started).await;
            return;
        }
        // The heartbeat runs as a task of its own: a renewal waits for the
        // job's row while the work holds it in a chunk's transaction, and
        // the work must go on meanwhile.
        let control = Arc::new(Control::default());
        let heartbeat = tokio::spawn(self.clone().heartbeat(claimed.clone(), control.clone(), shutdown));
        let result = self.work(&claimed, &control).await;
        heartbeat.abort();
        let (outcome, file) = match result {
            Ok(finished) => (Outcome::Succeeded(finished.result), finished.file),
            Err(JobError::Input(e)) => (Outcome::Failed(e), None),
            Err(JobError::Transient(e)) => {
                let delay = lease::backoff(
                    claimed.job.attempts,
                    Duration::from_millis(self.settings.backoff_base_ms),
                    Duration::from_millis(self.settings.backoff_cap_ms),
                );
                (Outcome::Retry { error: format!("{e:#}"), delay }, None)
            }
            Err(JobError::Stopped) => match control.stopped() {
                Some(Stop::Cancelled) => (Outcome::Cancelled, None),
                Some(Stop::Shutdown) => (Outcome::Released, None),
                Some(Stop::LeaseLost) | None => {
                    metrics::attempt_ended(&kind, claimed.job.id, "lease-lost", started.elapsed(), Some("the lease was lost"));
                    return;
                }
            },
        };
        self.finish(&claimed, outcome, file, started).await;
    }

    /// Renews the lease and stores the progress every heartbeat; tells the
    /// job to stop on a cancel request, a lost lease or shutdown.
    async fn heartbeat(self: Arc<Self>, claimed: Claimed, control: Arc<Control>, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.settings.heartbeat_ms);
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {
                    match lease::renew(&self.pool, &claimed, self.settings.lease(), &control.take_report()).await {
                        Ok(Some(true)) => control.tell(Stop::Cancelled),
                        Ok(Some(false)) => {}
                        Ok(None) => control.tell(Stop::LeaseLost),
                        Err(e) => tracing::warn!(job = %claimed.job.id, error = %e, "cannot renew the lease"),
                    }
                }
                () = shutdown.cancelled(), if control.stopped().is_none() => control.tell(Stop::Shutdown),
            }
        }
    }

    async fn work(&self, claimed: &Claimed, control: &Control) -> Result<Finished, JobError> {
        match claimed.job.kind.as_str() {
            command_service::jobs::params::IMPORT => crate::import::run(self, claimed, control).await,
            command_service::jobs::params::REPORT => crate::report::run(self, claimed, control).await,
            command_service::jobs::params::SELFTEST => crate::selftest::run(self, claimed, control).await,
            other => Err(JobError::Input(format!("this worker does not know jobs of kind {other:?}"))),
        }
    }

    /// Writes how the attempt ended (with its file), retrying while the
    /// database is away; gives up when the lease has run out meanwhile
    /// (the next worker does the job again).
    async fn finish(&self, claimed: &Claimed, outcome: Outcome, file: Option<ResultFile>, started: Instant) {
        let deadline = Instant::now() + self.settings.lease();
        let status = loop {
            match self.try_finish(claimed, &outcome, file.as_ref()).await {
                Ok(status) => break status,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(job = %claimed.job.id, error = %e, "cannot record the end of the job; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(job = %claimed.job.id, error = %e, "cannot record the end of the job; its lease will run out");
                    break None;
                }
            }
        };
        if let Some(file) = &file {
            let _ = std::fs::remove_file(&file.path);
        }
        let (label, error) = match (&outcome, status) {
            (_, None) => ("lease-lost", Some("the lease was lost before the end was recorded".to_owned())),
            (Outcome::Retry { error, .. }, Some(Status::Dead)) => ("dead", Some(error.clone())),
            (Outcome::Retry { error, .. }, _) => ("retry", Some(error.clone())),
            (Outcome::Failed(error), _) => ("failed", Some(error.clone())),
            (Outcome::Cancelled, _) => ("cancelled", None),
            (Outcome::Released, _) => ("released", None),
            (Outcome::Succeeded(_), _) => ("succeeded", None),
        };
        metrics::attempt_ended(&claimed.job.kind, claimed.job.id, label, started.elapsed(), error.as_deref());
    }

    async fn try_finish(&self, claimed: &Claimed, outcome: &Outcome, file: Option<&ResultFile>) -> anyhow::Result<Option<Status>> {
        let mut tx = self.pool.begin().await?;
        if let (Some(file), Outcome::Succeeded(_)) = (file, outcome) {
            // The lease first: no file is stored for an attempt that lost it.
            if !lease::fence(&mut tx, claimed, None, &Report { phase: Some("storing".into()), ..Report::default() }).await? {
                return Ok(None);
            }
            let mut writer = Writer::new(claimed.job.id, "result", file.content_type);
            let mut f = tokio::fs::File::open(&file.path).await?;
            let mut buffer = vec![0u8; platform::jobs::files::CHUNK];
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut f, &mut buffer).await?;
                if n == 0 {
                    break;
                }
                writer.write(&mut tx, &buffer[..n]).await?;
            }
            writer.finish(&mut tx).await?;
        }
        let status = lease::finish(&mut tx, claimed, &self.name, outcome).await?;
        if status.is_some() {
            tx.commit().await?;
        }
        Ok(status)
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(JOBS_CHANNEL).await.ok()?;
    Some(listener)
}

/// Waits for a notification: `true` when one came, `false` when the
/// listener broke (never resolves without one).
async fn recv(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(l) => l.recv().await.is_ok(),
        None => std::future::pending().await,
    }
}
