//! The system under test: either started here (a database, a topic and a
//! Redis prefix of its own on the servers `scripts/infra.sh up-test` runs,
//! and every service binary found next to this one, so release builds are
//! measured with a release generator), or one that already runs (`--attach`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::users::Keys;

/// The services a run starts, in start order.
pub(crate) const SERVICES: [&str; 5] = ["command-service", "projector", "query-service", "worker", "notifier"];

#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) env: testkit::TestEnv,
    children: Vec<(&'static str, Child)>,
    pub(crate) logs: PathBuf,
}

#[derive(Debug)]
pub(crate) struct System {
    pub(crate) command_url: String,
    pub(crate) query_url: String,
    pub(crate) database_url: String,
    /// Every role: imports the catalogue, reads the projection's status.
    pub(crate) admin_key: String,
    pub(crate) keys: Keys,
    pub(crate) spawned: Option<Spawned>,
}

/// The machine's online cores as `taskset` writes them (`0-1`).
fn online_cores() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "0".into())
}

/// The cores this process may run on (`Cpus_allowed_list`).
pub(crate) fn own_cores() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_owned())))
        .unwrap_or_default()
}

impl System {
    /// Starts every service on a fresh environment and makes API keys:
    /// `readers`, `writers` and `analysts` keys of those roles.
    pub(crate) async fn spawn(readers: usize, writers: usize, analysts: usize) -> anyhow::Result<Self> {
        let env = testkit::TestEnv::new(4).await?;
        let pool = env.pool().await?;
        platform::db::MIGRATOR.run(&pool).await?;
        let make = |roles: &'static [&'static str], n: usize, pool: PgPool| async move {
            let mut keys = Vec::new();
            for i in 0..n {
                let key = platform::auth::keys::generate();
                let new = platform::auth::keys::NewKey {
                    name: format!("loadtest-{}-{i}", roles[0]),
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                    warehouses: vec![],
                    expires_at: None,
                };
                platform::auth::keys::insert(&pool, &key, &new).await?;
                keys.push(key);
            }
            anyhow::Ok(keys)
        };
        let admin_key = make(&["admin", "reader", "writer", "master-data", "analyst"], 1, pool.clone()).await?.remove(0);
        let keys = Keys {
            readers: make(&["reader"], readers, pool.clone()).await?,
            writers: make(&["writer", "reader"], writers, pool.clone()).await?,
            analysts: make(&["analyst", "reader"], analysts, pool.clone()).await?,
        };
        let logs = std::env::temp_dir().join(format!("erp-loadtest-{}", env.id));
        std::fs::create_dir_all(&logs)?;
        let mut children = Vec::new();
        let mut urls = std::collections::HashMap::new();
        for name in SERVICES {
            let port = testkit::free_port();
            children.push((name, start(name, &env, port, &logs)?));
            urls.insert(name, format!("http://127.0.0.1:{port}"));
        }
        for name in SERVICES {
            testkit::wait_ready(&urls[name], Duration::from_secs(60))
                .await
                .map_err(|e| anyhow::anyhow!("{name} did not get ready ({e}); its log: {}", logs.join(format!("{name}.log")).display()))?;
        }
        Ok(Self {
            command_url: urls["command-service"].clone(),
            query_url: urls["query-service"].clone(),
            database_url: env.database.url.clone(),
            admin_key,
            keys,
            spawned: Some(Spawned { env, children, logs }),
        })
    }

    /// Stops what [`System::spawn`] started (SIGTERM, then waits) and drops its database.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let Some(spawned) = self.spawned else { return Ok(()) };
        for (name, mut child) in spawned.children.into_iter().rev() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
                eprintln!("{name} did not stop within 20 s of SIGTERM; killed");
                child.kill().await?;
            }
        }
        let admin = &testkit::Servers::shared().pg_admin_url;
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin).await?;
        let db = spawned.env.database.url.rsplit('/').next().unwrap_or_default().to_owned();
        sqlx::query(&format!("drop database if exists {db} with (force)")).execute(&mut conn).await?;
        Ok(())
    }
}

/// Starts service `name` from the directory of this binary, on all cores
/// even when the generator is pinned to one (`taskset`), logging to `logs`.
fn start(name: &str, env: &testkit::TestEnv, port: u16, logs: &std::path::Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(exe.exists(), "{} is missing: build the workspace's binaries first", exe.display());
    let all = online_cores();
    let mut command = if own_cores() != all && which("taskset") {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(&all).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    command
        .env("APP_HTTP__PORT", port.to_string())
        .env("APP_DATABASE__URL", &env.database.url)
        .env("APP_KAFKA__BROKERS", &env.kafka.brokers)
        .env("APP_KAFKA__EVENTS_TOPIC", &env.kafka.events_topic)
        .env("APP_REDIS__URL", &env.redis.url)
        .env("APP_REDIS__KEY_PREFIX", &env.redis.key_prefix)
        .env("APP_PROJECTOR__GROUP_ID", &env.group_id)
        .env("APP_NOTIFY__GROUP_ID", format!("{}-notifier", env.group_id))
        .env("APP_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    Ok(command.spawn()?)
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Waits until the outbox is drained and the serving generation has applied
/// every event in the event store; returns the number of events.
pub(crate) async fn settled(pool: &PgPool, timeout: Duration) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let written: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(pool).await?;
        let pending: i64 = sqlx::query_scalar("select count(*) from outbox where relayed_at is null").fetch_one(pool).await?;
        let applied: Option<i64> = match readmodel::active(pool).await? {
            Some(generation) => sqlx::query_scalar(&format!("select sum(sequence)::int8 from {}.streams", generation.schema)).fetch_one(pool).await?,
            None => None,
        };
        if pending == 0 && applied == Some(written) {
            return Ok(written);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not settled after {timeout:?}: {written} events, {pending} not relayed, {applied:?} applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
