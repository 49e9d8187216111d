//! Helpers for the end-to-end tests: start the service binaries as processes
//! with a test's settings, stop, kill and restart them; a load of mixed
//! commands ([`load`]) and the check that the accepted commands, the topic
//! and the read models agree ([`check`]).

pub mod check;
pub mod load;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::{TestEnv, eventually};
use tokio::process::{Child, Command};

/// The API key every end-to-end test calls the services with: every role,
/// every warehouse. A fixed key (only its hash is stored, in the test's own
/// database, by [`authorize`]), so that a restarted service accepts it too.
pub const TEST_KEY: &str = "erp_e2e0c0de_dGVzdC1rZXktb2YtdGhlLWVuZC10by1lbmQtdGVzdHM";

/// Makes [`TEST_KEY`] valid in the test's database (migrating it first).
pub async fn authorize(env: &TestEnv) -> anyhow::Result<()> {
    let pool = env.pool().await?;
    platform::db::MIGRATOR.run(&pool).await?;
    let new = platform::auth::keys::NewKey {
        name: "e2e".into(),
        roles: platform::auth::Role::ALL.iter().map(|r| r.as_str().to_owned()).collect(),
        warehouses: vec![],
        expires_at: None,
    };
    match platform::auth::keys::insert(&pool, TEST_KEY, &new).await {
        Ok(_) => Ok(()),
        // Made for an earlier service of the same test.
        Err(_) if platform::auth::keys::find(&pool, &platform::auth::keys::hash(TEST_KEY)).await?.is_some() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An HTTP client that sends [`TEST_KEY`].
pub fn http() -> reqwest::Client {
    http_builder().build().expect("an HTTP client")
}

/// [`http`] before it is built (to set a timeout).
pub fn http_builder() -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {TEST_KEY}")).expect("a header value");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers)
}

/// One of the service binaries (command-service, projector, query-service, worker, notifier), running.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub base_url: String,
    child: Child,
    port: u16,
    env: TestEnv,
    extra: Vec<(String, String)>,
}

/// Where cargo put the workspace's binaries (next to this test's `deps/`).
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(|deps| deps.parent()).expect("target directory").to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = binary_dir().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// Runs one of the workspace's binaries with `args` and `env` (nothing else
/// from this process's environment but `PATH`); returns its output, whatever
/// the exit status.
pub async fn run_binary(name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<std::process::Output> {
    let mut command = Command::new(binary(name));
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    Ok(command.kill_on_drop(true).output().await?)
}

/// A service binary's admin command (e.g. `projector rebuild`) with the
/// test's settings, not started; killed when dropped.
pub fn admin_command(name: &'static str, env: &TestEnv, args: &[&str]) -> Command {
    let mut command = Command::new(binary(name));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_DATABASE__URL", &env.database.url)
        .env("APP_KAFKA__BROKERS", &env.kafka.brokers)
        .env("APP_KAFKA__EVENTS_TOPIC", &env.kafka.events_topic)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if name != "command-service" {
        command.env("APP_REDIS__URL", &env.redis.url).env("APP_REDIS__KEY_PREFIX", &env.redis.key_prefix);
    }
    command
}

/// Runs [`admin_command`]; returns its standard output, or fails with its standard error.
pub async fn run_command(name: &'static str, env: &TestEnv, args: &[&str]) -> anyhow::Result<String> {
    let output = admin_command(name, env, args).output().await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    anyhow::ensure!(output.status.success(), "{name} {args:?} failed with {}: {stderr}", output.status);
    Ok(stdout)
}

impl Service {
    /// Starts `name` with the test's database, Redis, Kafka and a free port,
    /// and waits until it is ready.
    pub async fn start(name: &'static str, env: &TestEnv, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let service = Self::spawn(name, env, extra).await?;
        testkit::wait_ready(&service.base_url, Duration::from_secs(30)).await?;
        Ok(service)
    }

    /// Starts `name` like [`Service::start`] without waiting for readiness.
    pub async fn spawn(name: &'static str, env: &TestEnv, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        authorize(env).await?;
        let port = testkit::free_port();
        let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let child = Self::command(name, env, port, &extra).spawn()?;
        let base_url = format!("http://127.0.0.1:{port}");
        Ok(Self { name, base_url, child, port, env: env.clone(), extra })
    }

    fn command(name: &str, env: &TestEnv, port: u16, extra: &[(String, String)]) -> Command {
        let mut command = Command::new(binary(name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_HTTP__PORT", port.to_string())
            .env("APP_DATABASE__URL", &env.database.url)
            .env("APP_LOG__FILTER", "info")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if name != "worker" {
            command.env("APP_KAFKA__BROKERS", &env.kafka.brokers).env("APP_KAFKA__EVENTS_TOPIC", &env.kafka.events_topic);
        }
        if name != "command-service" && name != "worker" && name != "notifier" {
            command.env("APP_REDIS__URL", &env.redis.url).env("APP_REDIS__KEY_PREFIX", &env.redis.key_prefix);
        }
        if name == "projector" {
            command.env("APP_PROJECTOR__GROUP_ID", &env.group_id);
        }
        if name == "notifier" {
            command.env("APP_NOTIFY__GROUP_ID", format!("{}-notifier", env.group_id));
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        command
    }

    /// SIGKILL, keeping what is needed to start the same process again
    /// ([`Service::respawn`]).
    pub async fn crash(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Starts the process again with the same settings on the same port,
    /// without waiting for readiness.
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        self.child = Self::command(self.name, &self.env, self.port, &self.extra).spawn()?;
        Ok(())
    }

    /// [`Service::respawn`], then waits until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.respawn()?;
        testkit::wait_ready(&self.base_url, Duration::from_secs(30)).await
    }

    /// SIGKILL: the process dies wherever it is.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await??;
        anyhow::ensure!(status.success(), "{} exited with {status}", self.name);
        Ok(())
    }
}

/// Posts a mixed history through the command-service: registrations, charges,
/// receipts, transfers, a backdated issue, reservations, a count, a block.
pub async fn post_history(command: &str, articles: usize) -> anyhow::Result<()> {
    let http = crate::http();
    let post = |path: String, body: Value| {
        let http = http.clone();
        async move {
            let r = http.post(format!("{command}{path}")).json(&body).send().await?;
            anyhow::ensure!(r.status().is_success(), "POST {path}: {} {}", r.status(), r.text().await?);
            anyhow::Ok(())
        }
    };
    for i in 0..articles {
        let a = format!("ART-{i}");
        let category = ["bolts", "glue", "paint"][i % 3];
        post("/articles".into(), json!({ "article": a, "name": format!("Article {i}"), "category": category, "unit": { "code": "pcs" }, "reorder_point": 50 })).await?;
        for c in ["L1", "L2"] {
            post(format!("/articles/{a}/charges"), json!({ "charge": c, "production_date": format!("2026-10-{:02}", 1 + i % 28) })).await?;
        }
        let hours_ago = |h: i64| (Utc::now() - chrono::Duration::hours(h)).to_rfc3339();
        post("/stock/receipts".into(), json!({ "article": a, "charge": "L1", "warehouse": "W1", "quantity": 40 + i, "posted_at": hours_ago(3) })).await?;
        post("/stock/receipts".into(), json!({ "article": a, "charge": "L2", "warehouse": "W2", "quantity": 10 })).await?;
        post("/stock/transfers".into(), json!({ "article": a, "charge": "L1", "from": "W1", "to": "W2", "quantity": 5 })).await?;
        // Before the transfer in posting time: the transfer's balance shifts.
        post("/stock/issues".into(), json!({ "article": a, "charge": "L1", "warehouse": "W1", "quantity": 3, "posted_at": hours_ago(2) })).await?;
        post(format!("/articles/{a}/reservations"), json!({ "reservation": "R1", "charge": "L2", "warehouse": "W2", "quantity": 4, "reference": "order" })).await?;
        post("/stock/inventory-counts".into(), json!({ "article": a, "charge": "L2", "warehouse": "W2", "counted": 9 })).await?;
        if i % 4 == 0 {
            post(format!("/articles/{a}/charges/L2/block"), json!({ "reason": "inspection" })).await?;
        }
    }
    Ok(())
}

/// Waits until the serving generation has applied every event in the event store.
pub async fn caught_up(pool: &PgPool) -> anyhow::Result<()> {
    eventually(Duration::from_secs(60), "the projection to catch up", || async {
        let written: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(pool).await.ok()?;
        let generation = readmodel::active(pool).await.ok()??;
        let applied: Option<i64> = sqlx::query_scalar(&format!("select sum(sequence)::int8 from {}.streams", generation.schema))
            .fetch_one(pool)
            .await
            .ok()?;
        (written > 0 && applied == Some(written)).then_some(())
    })
    .await
}

