//! Redis down: the query-service answers from PostgreSQL, and after a few
//! failures its circuit breaker skips Redis instead of trying it per request.

use std::time::Duration;

use e2e::Service;
use serde_json::{Value, json};
use testkit::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_reads_come_from_postgresql_and_the_breaker_skips_redis() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let closed = format!("redis://127.0.0.1:{}/0", testkit::free_port());
    let command = Service::start("command-service", &env, &[]).await?;
    // Neither can be ready without Redis; both still work.
    let projector = Service::spawn("projector", &env, &[("APP_REDIS__URL", closed.clone())]).await?;
    let query = Service::spawn("query-service", &env, &[("APP_REDIS__URL", closed)]).await?;
    let http = e2e::http();
    let post = |path: &str, body: Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    for a in 0..5 {
        let article = format!("ART-D{a}");
        post("/articles", json!({ "article": article, "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
        post(&format!("/articles/{article}/charges"), json!({ "charge": "L1", "production_date": "2026-11-01" })).await?;
        let r = post("/stock/receipts", json!({ "article": article, "charge": "L1", "warehouse": "WH", "quantity": a + 1 })).await?;
        assert_eq!(r.status(), 201);
    }
    for a in 0..5 {
        let url = format!("{}/articles/ART-D{a}/stock", query.base_url);
        let stock: Value = eventually(Duration::from_secs(30), "the document from PostgreSQL", || async {
            let response = http.get(&url).send().await.ok()?;
            if response.status() != 200 {
                return None;
            }
            let stock: Value = response.json().await.ok()?;
            (stock["on_hand"] == a + 1).then_some(stock)
        })
        .await?;
        assert_eq!(stock["on_hand"], a + 1);
    }
    let stats: Value = http.get(format!("{}/cache/stats", query.base_url)).send().await?.json().await?;
    assert!(stats["redis"]["errors"].as_u64().unwrap() >= 3, "{stats}");
    assert!(stats["redis"]["skipped"].as_u64().unwrap() >= 1, "the breaker skipped Redis: {stats}");
    assert_eq!(stats["memory"]["following_invalidations"], false, "{stats}");
    assert!(stats["memory"]["bypassed"].as_u64().unwrap() >= 5, "no answer was kept in memory: {stats}");
    assert!(stats["postgres"]["hits"].as_u64().unwrap() >= 5, "{stats}");
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}
