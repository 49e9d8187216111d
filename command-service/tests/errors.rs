//! Every kind of bad request gets its problem+json status, names what is
//! wrong, and writes nothing.

mod common;

use common::*;
use serde_json::{Value, json};
use testkit::TestEnv;

async fn events(env: &TestEnv) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&env.pool().await?).await?;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_their_status_name_the_problem_and_write_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let app = start(settings(&env, false)).await?;
    let http = reqwest::Client::new();
    seed(&http, &app.url, "ART-E", 5).await?;
    let before = events(&env).await?;
    let url = |p: &str| format!("{}{p}", app.url);
    let problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(ct, "application/problem+json");
        (status, r.json::<Value>().await.unwrap())
    };

    // 400: not JSON.
    let r = http.post(url("/stock/issues")).header("content-type", "application/json").body("{\"article\":").send().await?;
    assert_eq!(problem(r).await.0, 400);
    // 415: not declared as JSON.
    let r = http.post(url("/stock/issues")).header("content-type", "text/plain").body("{}").send().await?;
    assert_eq!(problem(r).await.0, 415);
    // 413: too large.
    let big = json!({ "article": "ART-E", "name": "x".repeat(100_000), "category": "c", "unit": {"code": "pcs"} });
    let r = http.post(url("/articles")).json(&big).send().await?;
    assert_eq!(problem(r).await.0, 413);
    // 422: a missing field, a field of the wrong type, an invalid value, an unknown field.
    for (body, field) in [
        (json!({ "article": "ART-E", "charge": "L1", "quantity": 1 }), "body"),
        (json!({ "article": "ART-E", "charge": "L1", "warehouse": "WH", "quantity": "many" }), "quantity"),
        (json!({ "article": "ART-E", "charge": "L1", "warehouse": "WH", "quantity": -1 }), "quantity"),
        (json!({ "article": "ART E", "charge": "L1", "warehouse": "WH", "quantity": 1 }), "article"),
        (json!({ "article": "ART-E", "charge": "L1", "warehouse": "WH", "quantity": 1.5 }), "quantity"),
        // serde would read a struct from an array, field by field: a body must be an object.
        (json!(["ART-E", "L1", "WH", 1, null]), "body"),
    ] {
        let (status, p) = problem(http.post(url("/stock/issues")).json(&body).send().await?).await;
        assert_eq!(status, 422, "{body}");
        assert!(p["field"].as_str().unwrap().contains(field), "{body}: {p}");
        assert!(!p["reason"].as_str().unwrap().is_empty());
    }
    // JSON has one number type: 3.0 is the whole number 3 (as JSON Schema's integer says).
    let r = http.post(url("/stock/receipts")).json(&json!({ "article": "ART-E", "charge": "L1", "warehouse": "WH2", "quantity": 3.0 })).send().await?;
    assert_eq!(r.status(), 201, "{}", r.text().await?);
    let before = before + 1;
    // 404: unknown article, charge, reservation.
    for (path, body) in [
        ("/stock/issues", json!({ "article": "NOPE", "charge": "L1", "warehouse": "WH", "quantity": 1 })),
        ("/stock/issues", json!({ "article": "ART-E", "charge": "NOPE", "warehouse": "WH", "quantity": 1 })),
        ("/articles/ART-E/reservations/NOPE/release", json!({})),
    ] {
        let (status, p) = problem(http.post(url(path)).json(&body).send().await?).await;
        assert_eq!(status, 404, "{path} {p}");
    }
    // 409: a rule, with its numbers.
    let body = json!({ "article": "ART-E", "charge": "L1", "warehouse": "WH", "quantity": 6 });
    let (status, p) = problem(http.post(url("/stock/issues")).json(&body).send().await?).await;
    assert_eq!(status, 409);
    assert_eq!((p["rule"].as_str(), p["available"].as_i64(), p["requested"].as_i64()), (Some("insufficient-stock"), Some(5), Some(6)));

    assert_eq!(events(&env).await?, before, "nothing was written");
    app.shutdown().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_a_503_not_a_hang() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let mut s = settings(&env, false);
    s.database.url = format!("postgres://postgres:postgres@127.0.0.1:{}/nowhere", testkit::free_port());
    s.database.migrate = false;
    let app = start(s).await?;
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let r = http
        .post(format!("{}/stock/receipts", app.url))
        .json(&json!({ "article": "ART-E", "charge": "L1", "warehouse": "WH", "quantity": 1 }))
        .send()
        .await?;
    assert_eq!(r.status(), 503);
    let ready = http.get(format!("{}/health/ready", app.url)).send().await?;
    assert_eq!(ready.status(), 503);
    app.shutdown().await
}
