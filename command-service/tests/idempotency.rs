//! `Idempotency-Key`: a retry returns the original response and appends
//! nothing; another body with the same key is refused.

mod common;

use common::*;
use serde_json::{Value, json};
use testkit::TestEnv;

async fn keyed(http: &reqwest::Client, url: &str, key: &str, body: &Value) -> anyhow::Result<(u16, Option<String>, Value)> {
    let response = http.post(url).header("idempotency-key", key).json(body).send().await?;
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_owned());
    Ok((status, replayed, response.json().await?))
}

async fn event_count(env: &TestEnv) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&env.pool().await?).await?;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_with_the_same_key_and_body_returns_the_original_response_and_appends_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let app = start(settings(&env, false)).await?;
    let http = reqwest::Client::new();
    seed(&http, &app.url, "ART-1", 10).await?;
    let url = format!("{}/stock/issues", app.url);
    let body = json!({ "article": "ART-1", "charge": "L1", "warehouse": "WH", "quantity": 3 });

    let (status, replayed, first) = keyed(&http, &url, "issue-0001", &body).await?;
    assert_eq!((status, replayed), (201, None));
    let events = event_count(&env).await?;

    let (status, replayed, again) = keyed(&http, &url, "issue-0001", &body).await?;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, first);
    assert_eq!(event_count(&env).await?, events, "the retry appended nothing");

    let other = json!({ "article": "ART-1", "charge": "L1", "warehouse": "WH", "quantity": 4 });
    let (status, _, problem) = keyed(&http, &url, "issue-0001", &other).await?;
    assert_eq!(status, 422);
    assert_eq!(problem["field"], "Idempotency-Key");
    assert_eq!(event_count(&env).await?, events);
    app.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_append_once_and_all_get_the_same_answer() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let a = start(settings(&env, false)).await?;
    let b = start(settings(&env, false)).await?;
    let http = reqwest::Client::new();
    seed(&http, &a.url, "ART-2", 100).await?;
    let before = event_count(&env).await?;
    let body = json!({ "article": "ART-2", "charge": "L1", "warehouse": "WH", "quantity": 1 });
    let requests = (0..20).map(|i| {
        let (http, body) = (http.clone(), body.clone());
        let url = format!("{}/stock/issues", if i % 2 == 0 { &a.url } else { &b.url });
        tokio::spawn(async move { keyed(&http, &url, "same-key", &body).await })
    });
    let answers: Vec<_> = futures::future::join_all(requests).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert!(answers.iter().all(|(s, _, body)| *s == 201 && *body == answers[0].2), "{answers:?}");
    assert_eq!(event_count(&env).await?, before + 1);
    a.shutdown().await?;
    b.shutdown().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_command_is_not_remembered_so_its_key_can_be_retried() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let app = start(settings(&env, false)).await?;
    let http = reqwest::Client::new();
    seed(&http, &app.url, "ART-3", 0).await?;
    let issue = json!({ "article": "ART-3", "charge": "L1", "warehouse": "WH", "quantity": 1 });
    let url = format!("{}/stock/issues", app.url);
    assert_eq!(keyed(&http, &url, "k-3", &issue).await?.0, 409);
    let receipt = json!({ "article": "ART-3", "charge": "L1", "warehouse": "WH", "quantity": 1 });
    assert_eq!(post(&http, &format!("{}/stock/receipts", app.url), receipt).await?.0, 201);
    assert_eq!(keyed(&http, &url, "k-3", &issue).await?.0, 201);
    app.shutdown().await
}
