//! Helpers for the end-to-end tests: start the service binaries as processes
//! with a test's settings, and stop them with a signal.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use testkit::TestEnv;
use tokio::process::{Child, Command};

/// One of the three service binaries, running.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub base_url: String,
    child: Child,
}

/// Where cargo put the workspace's binaries (next to this test's `deps/`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target directory");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

impl Service {
    /// Starts `name` with the test's database, Redis, Kafka and a free port,
    /// and waits until it is ready.
    pub async fn start(name: &'static str, env: &TestEnv, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let service = Self::spawn(name, env, extra)?;
        testkit::wait_ready(&service.base_url, Duration::from_secs(30)).await?;
        Ok(service)
    }

    /// Starts `name` like [`Service::start`] without waiting for readiness.
    pub fn spawn(name: &'static str, env: &TestEnv, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let port = testkit::free_port();
        let mut command = Command::new(binary(name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_HTTP__PORT", port.to_string())
            .env("APP_DATABASE__URL", &env.database.url)
            .env("APP_LOG__FILTER", "info")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if name != "query-service" {
            command.env("APP_KAFKA__BROKERS", &env.kafka.brokers).env("APP_KAFKA__EVENTS_TOPIC", &env.kafka.events_topic);
        }
        if name != "command-service" {
            command.env("APP_REDIS__URL", &env.redis.url).env("APP_REDIS__KEY_PREFIX", &env.redis.key_prefix);
        }
        if name == "projector" {
            command.env("APP_PROJECTOR__GROUP_ID", &env.group_id);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn()?;
        let base_url = format!("http://127.0.0.1:{port}");
        Ok(Self { name, base_url, child })
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
