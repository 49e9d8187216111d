//! Settings of the worker; every field can be set as `APP_<SECTION>__<FIELD>`.

use std::collections::BTreeMap;
use std::time::Duration;

use command_service::settings::DomainSettings;
use platform::db::DatabaseSettings;
use platform::http::HttpSettings;
use platform::telemetry::LogSettings;
use serde::{Deserialize, Serialize};

/// The whole configuration of the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Health and metrics (default port 8084).
    pub http: HttpSettings,
    /// The database holding the jobs, the event store and the read models.
    pub database: DatabaseSettings,
    /// The domain rules imports are decided by: set them as for the command-service.
    pub domain: DomainSettings,
    /// How jobs are run.
    pub jobs: WorkerSettings,
    /// Logging.
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on_port(8084),
            database: DatabaseSettings::default(),
            domain: DomainSettings::default(),
            jobs: WorkerSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// How jobs are run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// This worker's name in the jobs' records and logs; empty: host name and process id.
    pub name: String,
    /// Jobs of each kind this worker runs at once, `kind=n,...`: a long
    /// import does not hold up reports.
    pub concurrency: String,
    /// How long a claim holds a job without a renewal, in milliseconds; a
    /// worker that dies hands its job on after this long.
    pub lease_ms: u64,
    /// How often a running job's lease is renewed, its progress stored and
    /// a cancel request looked for, in milliseconds.
    pub heartbeat_ms: u64,
    /// How often to look for due jobs without a notification, in milliseconds.
    pub poll_ms: u64,
    /// The delay before the first retry of a failed attempt, in
    /// milliseconds; doubled for each further one, with jitter (docs/jobs.md).
    pub backoff_base_ms: u64,
    /// The longest delay before a retry, in milliseconds.
    pub backoff_cap_ms: u64,
    /// Lines of an import decided and committed in one transaction.
    pub import_chunk_lines: usize,
    /// Most rows a report reads per second (0: no limit), to spare a busy
    /// database the full speed of a large report.
    pub report_rows_per_sec: u64,
    /// Where report files are written before they are stored; empty: the system's temporary directory.
    pub scratch_dir: String,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            name: String::new(),
            concurrency: "import=1,report=2,selftest=2".into(),
            lease_ms: 30_000,
            heartbeat_ms: 1_000,
            poll_ms: 1_000,
            backoff_base_ms: 5_000,
            backoff_cap_ms: 600_000,
            import_chunk_lines: 1_000,
            report_rows_per_sec: 0,
            scratch_dir: String::new(),
        }
    }
}

impl WorkerSettings {
    /// The concurrency per kind; refuses an unknown kind or a bad number.
    pub fn slots(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut slots = BTreeMap::new();
        for part in self.concurrency.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, n) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("APP_JOBS__CONCURRENCY: {part:?} is not kind=n"))?;
            if !command_service::jobs::params::KINDS.contains(&kind) {
                anyhow::bail!("APP_JOBS__CONCURRENCY: unknown kind {kind:?}");
            }
            let n: usize = n.parse().map_err(|_| anyhow::anyhow!("APP_JOBS__CONCURRENCY: {n:?} is not a number"))?;
            slots.insert(kind.to_owned(), n);
        }
        Ok(slots)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn worker_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    }
}
