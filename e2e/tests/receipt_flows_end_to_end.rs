//! A receipt posted to the command-service reaches the query-service through
//! PostgreSQL, the outbox relay, Kafka, the projector and Redis: every component
//! real, each service its own process.

use std::time::Duration;

use e2e::Service;
use serde_json::{Value, json};
use testkit::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn a_posted_receipt_is_served_by_the_query_service() -> anyhow::Result<()> {
    let env = TestEnv::new(3).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let http = e2e::http();

    let post = |path: &str, body: Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    let article = json!({ "article": "ART-1", "name": "Bolt M8", "category": "fasteners", "unit": { "code": "pcs" } });
    assert_eq!(post("/articles", article).await?.status(), 201);
    for charge in ["L1", "L2"] {
        let response = post("/articles/ART-1/charges", json!({ "charge": charge, "production_date": "2026-11-01" })).await?;
        assert_eq!(response.status(), 201);
    }

    for (charge, warehouse, quantity) in [("L1", "WH-A", 40), ("L1", "WH-B", 2), ("L2", "WH-A", 5)] {
        let response = http
            .post(format!("{}/stock/receipts", command.base_url))
            .json(&json!({ "article": "ART-1", "charge": charge, "warehouse": warehouse, "quantity": quantity }))
            .send()
            .await?;
        assert_eq!(response.status(), 201, "{}", response.text().await?);
    }

    let url = format!("{}/articles/ART-1/stock", query.base_url);
    let stock: Value = eventually(Duration::from_secs(30), "the third receipt in the read model", || async {
        let response = http.get(&url).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        (body["version"] == 6).then_some(body)
    })
    .await?;
    assert_eq!(stock["on_hand"], 47);
    assert_eq!(stock["available"], 47);
    assert_eq!(stock["warehouses"], json!([
        { "warehouse": "WH-A", "on_hand": 45, "reserved": 0, "available": 45 },
        { "warehouse": "WH-B", "on_hand": 2, "reserved": 0, "available": 2 },
    ]));
    assert_eq!(stock["charges"].as_array().map(Vec::len), Some(2));
    assert_eq!(stock["charges"][0]["charge"], "L1");
    assert_eq!(stock["charges"][0]["on_hand"], 42);
    assert_eq!(stock["charges"][0]["production_date"], "2026-11-01");
    assert_eq!(stock["charges"][0]["warehouses"].as_array().map(Vec::len), Some(2));

    // The projector wrote the same bytes to Redis that the query-service returns.
    let mut redis = redis::Client::open(env.redis.url.as_str())?.get_multiplexed_async_connection().await?;
    let stored: Vec<u8> = redis::cmd("GET").arg(env.redis.doc_key(1, "stock:ART-1")).query_async(&mut redis).await?;
    let served = http.get(&url).send().await?.bytes().await?;
    assert_eq!(stored, [b"6\n".as_slice(), &served].concat());

    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_article_is_404_and_a_bad_receipt_is_422_naming_the_field() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[("APP_RELAY__ENABLED", "false".into())]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let http = e2e::http();

    let response = http.get(format!("{}/articles/NOPE/stock", query.base_url)).send().await?;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/problem+json");

    let response = http
        .post(format!("{}/stock/receipts", command.base_url))
        .json(&json!({ "article": "ART-1", "charge": "L1", "warehouse": "WH-A", "quantity": 0 }))
        .send()
        .await?;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await?;
    assert_eq!(problem["field"], "quantity");

    // Nothing was written.
    let pool = env.pool().await?;
    let (events,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&pool).await?;
    assert_eq!(events, 0);

    query.stop().await?;
    command.stop().await?;
    Ok(())
}
