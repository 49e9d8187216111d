//! Liveness and readiness: a service is live as soon as it serves, and ready
//! only when its dependencies answer.

use std::time::Duration;

use e2e::Service;
use serde_json::Value;
use testkit::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn a_projector_whose_redis_is_down_is_live_but_not_ready_and_says_why() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let closed = format!("redis://127.0.0.1:{}/0", testkit::free_port());
    let projector = Service::spawn("projector", &env, &[("APP_REDIS__URL", closed)])?;
    let http = reqwest::Client::new();
    let live = format!("{}/health/live", projector.base_url);
    eventually(Duration::from_secs(30), "liveness", || async {
        http.get(&live).send().await.ok().filter(|r| r.status() == 200)
    })
    .await?;

    let response = http.get(format!("{}/health/ready", projector.base_url)).send().await?;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await?;
    assert_eq!(body["dependencies"]["redis"], "unreachable");
    assert_eq!(body["dependencies"]["postgres"], "up");
    assert_eq!(body["dependencies"]["kafka"], "up");
    projector.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_stops_cleanly_on_sigterm_once_ready() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    for name in ["command-service", "projector", "query-service"] {
        let service = Service::start(name, &env, &[]).await?;
        service.stop().await?;
    }
    Ok(())
}
