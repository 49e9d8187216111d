//! The query-service's in-process tier serves repeated reads from memory and
//! drops an entry as soon as the projector rewrites the document (by tag, over
//! Redis), long before its TTL.

use std::time::Duration;

use e2e::Service;
use serde_json::{Value, json};
use testkit::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_document_is_served_from_memory_and_dropped_when_the_projector_rewrites_it() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    // A TTL of an hour: only invalidation can refresh the entry within the test.
    let query = Service::start("query-service", &env, &[("APP_CACHE__TTL_SECS", "3600".to_owned())]).await?;
    let http = e2e::http();
    let post = |path: &str, body: Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    post("/articles", json!({ "article": "ART-Q", "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
    post("/articles/ART-Q/charges", json!({ "charge": "L1", "production_date": "2026-11-01" })).await?;
    let receipt = json!({ "article": "ART-Q", "charge": "L1", "warehouse": "WH", "quantity": 5 });
    assert_eq!(post("/stock/receipts", receipt.clone()).await?.status(), 201);

    let url = format!("{}/articles/ART-Q/stock", query.base_url);
    let stock = |http: reqwest::Client, url: String| async move {
        let body: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        Some(body)
    };
    eventually(Duration::from_secs(30), "the first receipt", || async {
        stock(http.clone(), url.clone()).await.filter(|b| b["on_hand"] == 5)
    })
    .await?;
    for _ in 0..5 {
        assert_eq!(stock(http.clone(), url.clone()).await.unwrap()["on_hand"], 5);
    }

    assert_eq!(post("/stock/receipts", receipt).await?.status(), 201);
    eventually(Duration::from_secs(30), "the second receipt through the cache", || async {
        stock(http.clone(), url.clone()).await.filter(|b| b["on_hand"] == 10)
    })
    .await?;

    let stats: Value = http.get(format!("{}/cache/stats", query.base_url)).send().await?.json().await?;
    assert!(stats["memory"]["hits"].as_u64().unwrap() >= 5, "{stats}");
    assert!(stats["memory"]["invalidations"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["memory"]["entries"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["redis"]["hits"].as_u64().unwrap() >= 1, "{stats}");

    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_holding_the_current_version_gets_304_without_a_body() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let http = e2e::http();
    let post = |path: &str, body: Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    post("/articles", json!({ "article": "ART-E", "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
    post("/articles/ART-E/charges", json!({ "charge": "L1", "production_date": "2026-11-01" })).await?;
    post("/stock/receipts", json!({ "article": "ART-E", "charge": "L1", "warehouse": "WH", "quantity": 5 })).await?;
    let url = format!("{}/articles/ART-E/stock", query.base_url);
    let etag = eventually(Duration::from_secs(30), "the document at the receipt", || async {
        let r = http.get(&url).send().await.ok()?;
        let etag = r.headers().get("etag")?.to_str().ok()?.to_owned();
        (r.status() == 200 && etag == "\"3\"").then_some(etag)
    })
    .await?;
    assert_eq!(etag, "\"3\"");
    let r = http.get(&url).header("if-none-match", &etag).send().await?;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.headers()["cache-control"].to_str()?.contains("must-revalidate"));
    assert!(r.bytes().await?.is_empty());
    let r = http.get(&url).header("if-none-match", "\"2\"").send().await?;
    assert_eq!(r.status(), 200, "an older version gets the document");
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_article_asked_again_costs_no_lookup_until_the_projector_announces_it() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[("APP_CACHE__TTL_SECS", "3600".to_owned())]).await?;
    let http = e2e::http();
    let stats = || async {
        let s: Value = http.get(format!("{}/cache/stats", query.base_url)).send().await?.json().await?;
        anyhow::Ok(s)
    };
    eventually(Duration::from_secs(10), "the invalidation subscription", || async {
        stats().await.ok().filter(|s| s["memory"]["following_invalidations"] == true)
    })
    .await?;
    let url = format!("{}/articles/ART-LATER/stock", query.base_url);
    for _ in 0..5 {
        assert_eq!(http.get(&url).send().await?.status(), 404);
    }
    let s = stats().await?;
    assert_eq!(s["postgres"]["misses"], 1, "one lookup, then the answer is remembered: {s}");
    assert!(s["memory"]["hits"].as_u64().unwrap() >= 4, "{s}");

    let post = |path: &str, body: Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    post("/articles", json!({ "article": "ART-LATER", "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
    eventually(Duration::from_secs(30), "the article to be found", || async {
        (http.get(&url).send().await.ok()?.status() == 200).then_some(())
    })
    .await?;
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}
