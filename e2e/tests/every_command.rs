//! Every command route of the write API succeeds over HTTP at least once,
//! and its effect is read back from the query-service (with the command's
//! consistency token, so the read waits for it).

use e2e::Service;
use serde_json::{Value, json};
use testkit::TestEnv;

struct Api {
    http: reqwest::Client,
    command: String,
    query: String,
}

impl Api {
    /// Sends a command; asserts 201 and returns its consistency token.
    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<String> {
        let r = self.http.request(method.clone(), format!("{}{path}", self.command)).json(&body).send().await?;
        let status = r.status();
        let answer: Value = r.json().await?;
        anyhow::ensure!(status == 201, "{method} {path}: {status} {answer}");
        Ok(answer["consistency_token"].as_str().expect("a consistency token").to_owned())
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<String> {
        self.command(reqwest::Method::POST, path, body).await
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<String> {
        self.command(reqwest::Method::PUT, path, body).await
    }

    /// Reads `path` once the write behind `token` is applied.
    async fn read(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        let r = self.http.get(format!("{}{path}", self.query)).header("x-consistency-token", token).send().await?;
        anyhow::ensure!(r.status() == 200, "GET {path}: {}", r.status());
        Ok(r.json().await?)
    }
}

fn bucket<'a>(stock: &'a Value, charge: &str, warehouse: &str) -> Option<&'a Value> {
    let charge = stock["charges"].as_array()?.iter().find(|c| c["charge"] == charge)?;
    charge["warehouses"].as_array()?.iter().find(|w| w["warehouse"] == warehouse)
}

fn figures(stock: &Value, charge: &str, warehouse: &str) -> (i64, i64) {
    bucket(stock, charge, warehouse).map_or((0, 0), |w| (w["on_hand"].as_i64().unwrap(), w["reserved"].as_i64().unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_route_succeeds_over_http_and_its_effect_is_served() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let api = Api { http: e2e::http(), command: command.base_url.clone(), query: query.base_url.clone() };
    let stock = "/articles/ART-9/stock";

    // Articles.
    let t = api
        .post("/articles", json!({ "article": "ART-9", "name": "Hex bolt", "category": "bolts", "unit": { "code": "pcs" } }))
        .await?;
    let s = api.read(stock, &t).await?;
    assert_eq!((s["name"].as_str(), s["category"].as_str()), (Some("Hex bolt"), Some("bolts")));
    let t = api.put("/articles/ART-9/name", json!({ "name": "Hex bolt M8" })).await?;
    assert_eq!(api.read(stock, &t).await?["name"], "Hex bolt M8");
    let t = api.put("/articles/ART-9/category", json!({ "category": "fasteners" })).await?;
    assert_eq!(api.read(stock, &t).await?["category"], "fasteners");

    // Charges and movements.
    let t = api.post("/articles/ART-9/charges", json!({ "charge": "L1", "production_date": "2026-11-02" })).await?;
    assert_eq!(api.read("/articles/ART-9/charges/L1", &t).await?["production_date"], "2026-11-02");
    api.post("/articles/ART-9/charges", json!({ "charge": "L2", "production_date": "2026-11-03" })).await?;
    let t = api.post("/stock/receipts", json!({ "article": "ART-9", "charge": "L1", "warehouse": "W1", "quantity": 30 })).await?;
    assert_eq!(figures(&api.read(stock, &t).await?, "L1", "W1"), (30, 0));
    let t = api.post("/stock/issues", json!({ "article": "ART-9", "charge": "L1", "warehouse": "W1", "quantity": 4 })).await?;
    assert_eq!(figures(&api.read(stock, &t).await?, "L1", "W1"), (26, 0));
    let t = api
        .post("/stock/transfers", json!({ "article": "ART-9", "charge": "L1", "from": "W1", "to": "W2", "quantity": 6 }))
        .await?;
    let s = api.read(stock, &t).await?;
    assert_eq!((figures(&s, "L1", "W1"), figures(&s, "L1", "W2")), ((20, 0), (6, 0)));
    let t = api.post("/stock/inventory-counts", json!({ "article": "ART-9", "charge": "L1", "warehouse": "W2", "counted": 5 })).await?;
    assert_eq!(figures(&api.read(stock, &t).await?, "L1", "W2"), (5, 0));

    // Reservations: reserve, release part, consume the rest.
    let t = api
        .post("/articles/ART-9/reservations", json!({ "reservation": "R1", "charge": "L1", "warehouse": "W1", "quantity": 8, "reference": "SO-1" }))
        .await?;
    assert_eq!(figures(&api.read(stock, &t).await?, "L1", "W1"), (20, 8));
    let t = api.post("/articles/ART-9/reservations/R1/release", json!({ "quantity": 3 })).await?;
    assert_eq!(figures(&api.read(stock, &t).await?, "L1", "W1"), (20, 5));
    let t = api.post("/articles/ART-9/reservations/R1/consume", json!({})).await?;
    assert_eq!(figures(&api.read(stock, &t).await?, "L1", "W1"), (15, 0));
    let detail = api.read("/articles/ART-9/charges/L1", &t).await?;
    assert_eq!(detail["reservations"].as_array().map(Vec::len), Some(0), "the consumed reservation is closed: {detail}");

    // Quality, blocking, the reorder point, discontinuation.
    let t = api
        .post(
            "/articles/ART-9/charges/L2/quality-results",
            json!({ "measurements": [{ "name": "tensile", "value": "790.5", "unit": "MPa" }], "quality_status": "rejected" }),
        )
        .await?;
    assert_eq!(api.read("/articles/ART-9/charges/L2", &t).await?["quality_status"], "rejected");
    let t = api.post("/articles/ART-9/charges/L1/block", json!({ "reason": "inspection" })).await?;
    assert_eq!(api.read("/articles/ART-9/charges/L1", &t).await?["blocked"], true);
    let t = api.post("/articles/ART-9/charges/L1/release", json!({})).await?;
    assert_eq!(api.read("/articles/ART-9/charges/L1", &t).await?["blocked"], false);
    let t = api.put("/articles/ART-9/reorder-point", json!({ "reorder_point": 100 })).await?;
    assert_eq!(api.read(stock, &t).await?["reorder_point"], 100);
    let low = api.read("/low-stock", &t).await?;
    assert!(low["items"].as_array().unwrap().iter().any(|i| i["article"] == "ART-9"), "20 available is below 100: {low}");
    let t = api.post("/articles/ART-9/discontinue", json!({})).await?;
    assert_eq!(api.read(stock, &t).await?["discontinued"], true);

    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}
