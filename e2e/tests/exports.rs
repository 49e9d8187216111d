//! The exports of the read API: the catalogue and the stock as CSV and
//! NDJSON agree with the stock documents, formulas are neutralised, a bad
//! format is a 400 naming it.

use std::collections::BTreeMap;

use e2e::Service;
use serde_json::{Value, json};
use testkit::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn the_stock_and_the_catalogue_export_as_csv_and_ndjson_and_agree_with_the_documents() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let _projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    e2e::post_history(&command.base_url, 3).await?;
    let http = e2e::http();
    // A name a spreadsheet would run as a formula.
    let r = http
        .post(format!("{}/articles", command.base_url))
        .json(&json!({ "article": "ART-X", "name": "=HYPERLINK(\"http://evil\")", "category": "bolts", "unit": { "code": "pcs" } }))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    e2e::caught_up(&env.pool().await?).await?;

    let get = |path: String| http.get(format!("{}{path}", query.base_url)).send();
    let r = get("/exports/stock".into()).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(r.headers()["content-disposition"].to_str()?.contains("stock.csv"));
    let csv = r.text().await?;
    let mut lines = csv.split("\r\n").filter(|l| !l.is_empty());
    assert_eq!(lines.next(), Some("article,charge,warehouse,category,quality_status,expiry_date,on_hand,reserved"));
    let mut on_hand: BTreeMap<String, i64> = BTreeMap::new();
    let mut csv_rows = 0;
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 8, "{line}");
        *on_hand.entry(fields[0].to_owned()).or_default() += fields[6].parse::<i64>()?;
        csv_rows += 1;
    }
    for i in 0..3 {
        let article = format!("ART-{i}");
        let stock: Value = get(format!("/articles/{article}/stock")).await?.json().await?;
        assert_eq!(on_hand.get(&article).copied(), stock["on_hand"].as_i64(), "{article}");
    }
    let ndjson = get("/exports/stock?format=ndjson".into()).await?;
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let rows: Vec<Value> = ndjson.text().await?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), csv_rows);
    assert_eq!(rows.iter().map(|r| r["on_hand"].as_i64().unwrap()).sum::<i64>(), on_hand.values().sum::<i64>());

    let catalogue = get("/exports/catalogue".into()).await?.text().await?;
    assert_eq!(catalogue.split("\r\n").filter(|l| !l.is_empty()).count(), 1 + 4, "{catalogue}");
    assert!(catalogue.contains("ART-X,\"'=HYPERLINK(\"\"http://evil\"\")\",bolts"), "{catalogue}");
    let r = get("/exports/catalogue?format=xml".into()).await?;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await?["field"], "format");
    Ok(())
}
