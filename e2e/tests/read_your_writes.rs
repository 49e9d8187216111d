//! Read-your-writes: with the consistency token of a write, the very first
//! read shows it; a position the projection does not reach in time is a 504.

use e2e::Service;
use serde_json::{Value, json};
use testkit::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn the_first_read_with_a_writes_token_shows_the_write() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let http = e2e::http();
    let post = |path: &str, body: Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    post("/articles", json!({ "article": "ART-R", "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
    post("/articles/ART-R/charges", json!({ "charge": "L1", "production_date": "2026-11-01" })).await?;
    let url = format!("{}/articles/ART-R/stock", query.base_url);
    for (i, quantity) in [4, 6, 10].into_iter().enumerate() {
        let accepted: Value = post("/stock/receipts", json!({
            "article": "ART-R", "charge": "L1", "warehouse": "WH", "quantity": quantity
        }))
        .await?
        .json()
        .await?;
        let token = accepted["consistency_token"].as_str().unwrap().to_owned();
        // The query parameter on odd rounds, the header on even ones; no retrying.
        let request = if i % 2 == 1 {
            let encoded = token.replace(':', "%3A").replace('@', "%40");
            http.get(format!("{url}?consistent_with={encoded}"))
        } else {
            http.get(&url).header("x-consistency-token", &token)
        };
        let response = request.send().await?;
        assert_eq!(response.status(), 200, "{token}");
        let stock: Value = response.json().await?;
        let expected = [4, 10, 20][i];
        assert_eq!(stock["on_hand"], expected, "read with {token}");
    }
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreached_position_is_a_504_and_a_malformed_token_a_400() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    // No projector here: the query-service creates the schema itself.
    let settings = [("APP_CONSISTENCY__MAX_WAIT_MS", "200".to_owned()), ("APP_DATABASE__MIGRATE", "true".to_owned())];
    let query = Service::start("query-service", &env, &settings).await?;
    let http = e2e::http();
    let url = format!("{}/articles/ART-R/stock", query.base_url);
    let response = http.get(&url).header("x-consistency-token", "article:ART-R@99").send().await?;
    assert_eq!(response.status(), 504);
    let problem: Value = response.json().await?;
    assert_eq!((problem["wanted"].as_u64(), problem["applied"].as_u64()), (Some(99), Some(0)));
    let response = http.get(&url).header("x-consistency-token", "ART-R@99").send().await?;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await?;
    assert_eq!(problem["field"], "consistent_with");
    query.stop().await
}
