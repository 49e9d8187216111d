//! Starts command-service instances in-process on a test's own database.
#![allow(dead_code, unreachable_pub)]

use command_service::{Application, Settings};
use platform::http::HttpSettings;
use platform::shutdown::CancellationToken;
use serde_json::{Value, json};
use testkit::TestEnv;

/// A running instance; stopped when the token is cancelled.
pub struct Instance {
    pub url: String,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn settings(env: &TestEnv, relay: bool) -> Settings {
    let mut settings = Settings {
        http: HttpSettings::on_port(0),
        database: env.database.clone(),
        kafka: env.kafka.clone(),
        ..Settings::default()
    };
    // The behaviour under test is the service's own; authentication has its
    // tests (tests/relay.rs for the actor, e2e/tests/security.rs for the rest).
    settings.auth.enabled = false;
    settings.relay.enabled = relay;
    settings.relay.idle_poll_ms = 200;
    settings
}

pub async fn start(settings: Settings) -> anyhow::Result<Instance> {
    let stop = CancellationToken::new();
    let app = Application::build(settings, stop.clone()).await?;
    let url = format!("http://{}", app.addr());
    let task = tokio::spawn(app.run_until_stopped());
    Ok(Instance { url, stop, task })
}

impl Instance {
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// POSTs JSON; returns the status and the body as JSON.
pub async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let response = http.post(url).json(&body).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Registers article `article` with charge `L1` and receives `stock` of it into `WH`.
pub async fn seed(http: &reqwest::Client, base: &str, article: &str, stock: i64) -> anyhow::Result<()> {
    let (s, b) = post(http, &format!("{base}/articles"), json!({
        "article": article, "name": "Bolt", "category": "fasteners", "unit": {"code": "pcs"}
    })).await?;
    anyhow::ensure!(s == 201, "register: {s} {b}");
    let (s, b) = post(http, &format!("{base}/articles/{article}/charges"), json!({
        "charge": "L1", "production_date": "2026-11-01"
    })).await?;
    anyhow::ensure!(s == 201, "charge: {s} {b}");
    if stock > 0 {
        let (s, b) = post(http, &format!("{base}/stock/receipts"), json!({
            "article": article, "charge": "L1", "warehouse": "WH", "quantity": stock
        })).await?;
        anyhow::ensure!(s == 201, "receipt: {s} {b}");
    }
    Ok(())
}
