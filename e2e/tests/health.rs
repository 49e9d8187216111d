//! Liveness and readiness: a service is live as soon as it serves, and ready
//! only when its dependencies answer and it does its job: a projector that
//! is behind and applies nothing is not ready, and partitions nobody applies
//! are named by the projection status.

use std::time::Duration;

use e2e::Service;
use serde_json::Value;
use testkit::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn a_projector_whose_redis_is_down_is_live_but_not_ready_and_says_why() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let closed = format!("redis://127.0.0.1:{}/0", testkit::free_port());
    let projector = Service::spawn("projector", &env, &[("APP_REDIS__URL", closed)]).await?;
    let http = e2e::http();
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
    for name in ["command-service", "projector", "query-service", "worker", "notifier"] {
        let service = Service::start(name, &env, &[]).await?;
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notifier_cut_off_from_postgres_is_not_ready_and_says_why_until_it_is_back() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let address = env.database.url.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let address = address.split('/').next().unwrap_or_default();
    let proxy = testkit::proxy::TcpProxy::start(address.rsplit_once('@').map_or(address, |(_, a)| a)).await?;
    let notifier = Service::start("notifier", &env, &[("APP_DATABASE__URL", proxy.url_for(&env.database.url))]).await?;
    let (status, body) = get(&notifier.base_url, "/health/ready").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["dependencies"]["intake"].as_str(), body["dependencies"]["delivery"].as_str()), (Some("up"), Some("up")));

    proxy.down();
    let body = eventually(Duration::from_secs(30), "not ready", || async {
        let (status, body) = get(&notifier.base_url, "/health/ready").await?;
        (status == 503).then_some(body)
    })
    .await?;
    assert_eq!(body["dependencies"]["postgres"], "unreachable", "{body}");
    proxy.up();
    eventually(Duration::from_secs(30), "ready again", || async {
        (get(&notifier.base_url, "/health/ready").await?.0 == 200).then_some(())
    })
    .await?;
    notifier.stop().await
}

/// `GET path` on `base` as JSON, with its status.
async fn get(base: &str, path: &str) -> Option<(u16, Value)> {
    let r = e2e::http().get(format!("{base}{path}")).send().await.ok()?;
    Some((r.status().as_u16(), r.json().await.ok()?))
}

/// The value of an unlabelled metric on `base`'s `/metrics`.
async fn metric(base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_nobody_applies_are_named_by_the_status_until_a_projector_takes_them() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    // The command-service creates the schema (the query-service only reads).
    let command = Service::start("command-service", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let (status, body) = get(&query.base_url, "/projection/status").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unowned_partitions"], serde_json::json!([0, 1]), "{body}");
    assert_eq!(body["projector_instances"], 0);

    let projector = Service::start("projector", &env, &[]).await?;
    let body = eventually(Duration::from_secs(30), "both partitions owned", || async {
        let (_, body) = get(&query.base_url, "/projection/status").await?;
        (body["unowned_partitions"] == serde_json::json!([])).then_some(body)
    })
    .await?;
    assert_eq!(body["projector_instances"], 1);
    let owners: Vec<&Value> = body["partitions"].as_array().unwrap().iter().map(|p| &p["owner"]).collect();
    assert!(owners.iter().all(|o| o.is_i64()) && owners[0] == owners[1], "one instance owns both: {body}");
    assert_eq!(metric(&projector.base_url, "erp_projector_partitions_owned").await, Some(2.0));
    assert_eq!(metric(&projector.base_url, "erp_projector_partitions_unowned").await, Some(0.0));
    for service in [projector, query, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projector_behind_that_applies_nothing_turns_not_ready_and_ready_again_when_it_moves() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[("APP_PROJECTOR__STALL_AFTER_SECS", "2".to_owned())]).await?;
    let pool = env.pool().await?;
    let http = e2e::http();
    let post = |path: &str, body: Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    post("/articles", serde_json::json!({ "article": "A", "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
    e2e::caught_up(&pool).await?;

    // Something holds the read models' stream rows: batches wait, the lag
    // stays. (A share lock takes no transaction id, so the outbox relay,
    // which waits for older transactions, still publishes.)
    let mut blocker = pool.begin().await?;
    sqlx::query("lock table rm_1.streams in share mode").execute(&mut *blocker).await?;
    post("/articles/A/charges", serde_json::json!({ "charge": "L1", "production_date": "2026-11-01" })).await?;
    let body = eventually(Duration::from_secs(60), "the projector to report the stall", || async {
        let (status, body) = get(&projector.base_url, "/health/ready").await?;
        (status == 503).then_some(body)
    })
    .await?;
    let reason = body["dependencies"]["partitions"].as_str().unwrap_or_default();
    assert!(reason.contains("1 records behind with nothing applied"), "{body}");
    assert_eq!(body["dependencies"]["postgres"], "up", "PostgreSQL itself answers");
    // The gauge follows at the next statistics (every 5 s).
    eventually(Duration::from_secs(30), "the stalled gauge past the bound", || async {
        metric(&projector.base_url, "erp_projector_stalled_seconds").await.filter(|s| *s > 2.0)
    })
    .await?;

    blocker.rollback().await?;
    e2e::caught_up(&pool).await?;
    testkit::wait_ready(&projector.base_url, Duration::from_secs(30)).await?;
    for service in [projector, command] {
        service.stop().await?;
    }
    Ok(())
}
