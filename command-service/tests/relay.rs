//! The outbox relay: commands are accepted while the broker is down, and once
//! it is back every event reaches the topic, in stream order, with its
//! CloudEvents headers and the article id as key.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::json;
use testkit::{Broker, TestEnv, eventually, read_topic};

#[tokio::test(flavor = "multi_thread")]
async fn commands_are_accepted_while_the_broker_is_down_and_relayed_when_it_returns() -> anyhow::Result<()> {
    let mut env = TestEnv::new(1).await?;
    // A broker of this test's own, not started yet.
    let port = testkit::free_port();
    env.kafka.brokers = format!("127.0.0.1:{port}");
    env.kafka.partitions = 3;
    let app = start(settings(&env, true)).await?;
    let http = reqwest::Client::new();

    for article in ["ART-A", "ART-B", "ART-C"] {
        seed(&http, &app.url, article, 0).await?;
        for _ in 0..10 {
            let (status, body) = post(&http, &format!("{}/stock/receipts", app.url), json!({
                "article": article, "charge": "L1", "warehouse": "WH", "quantity": 1
            }))
            .await?;
            assert_eq!(status, 201, "{body}");
        }
    }
    let pool = env.pool().await?;
    let pending = || async {
        let (n,): (i64,) = sqlx::query_as("select count(*) from outbox where relayed_at is null")
            .fetch_one(&pool)
            .await
            .ok()?;
        Some(n)
    };
    assert_eq!(pending().await, Some(36), "3 articles x (register + charge + 10 receipts) wait in the outbox");

    let _broker = Broker::start(port).await?;
    eventually(Duration::from_secs(60), "the outbox to drain", || async { (pending().await? == 0).then_some(()) })
        .await?;

    let records = read_topic(&env.kafka, &env.kafka.events_topic).await?;
    let mut by_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &records {
        let subject = r.header("ce_subject").expect("ce_subject");
        assert_eq!(subject, format!("article:{}", r.key), "the key is the article id");
        assert_eq!(r.header("ce_specversion"), Some("1.0"));
        by_stream.entry(subject.to_owned()).or_default().push(r.header("ce_sequence").unwrap().parse()?);
    }
    for (stream, sequences) in &by_stream {
        let mut seen: Vec<u64> = sequences.clone();
        seen.dedup();
        assert_eq!(seen, (1..=12).collect::<Vec<_>>(), "{stream}: every event, in order");
    }
    assert_eq!(by_stream.len(), 3);
    app.shutdown().await
}

#[tokio::test(flavor = "multi_thread")]
async fn relayed_rows_are_pruned_after_their_retention() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let mut s = settings(&env, true);
    s.relay.retention_secs = 0;
    let app = start(s).await?;
    let http = reqwest::Client::new();
    seed(&http, &app.url, "ART-P", 5).await?;
    let pool = env.pool().await?;
    // Pruning runs when the relay starts and every minute: restart it to prune now.
    eventually(Duration::from_secs(30), "rows to be relayed", || async {
        let (n,): (i64,) = sqlx::query_as("select count(*) from outbox where relayed_at is null").fetch_one(&pool).await.ok()?;
        (n == 0).then_some(())
    })
    .await?;
    app.shutdown().await?;
    let app = start({
        let mut s = settings(&env, true);
        s.relay.retention_secs = 0;
        s
    })
    .await?;
    eventually(Duration::from_secs(30), "relayed rows to be pruned", || async {
        let (n,): (i64,) = sqlx::query_as("select count(*) from outbox").fetch_one(&pool).await.ok()?;
        (n == 0).then_some(())
    })
    .await?;
    let (events,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&pool).await?;
    assert_eq!(events, 3, "the events themselves stay");
    app.shutdown().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_correlation_id_and_the_verified_principal_travel_into_the_kafka_headers() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let mut settings = settings(&env, true);
    settings.auth.enabled = true;
    let app = start(settings).await?;
    let key = platform::auth::keys::generate();
    let new = platform::auth::keys::NewKey { name: "integration".into(), roles: vec!["master-data".into()], warehouses: vec![], expires_at: None };
    platform::auth::keys::insert(&env.pool().await?, &key, &new).await?;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/articles", app.url))
        .bearer_auth(&key)
        .header("x-correlation-id", "order-4711")
        // Forged: ignored, the actor is who authenticated.
        .header("x-actor", "erp-frontend")
        .json(&json!({ "article": "ART-C", "name": "n", "category": "c", "unit": { "code": "pcs" } }))
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    let records = eventually(Duration::from_secs(30), "the event on the topic", || async {
        let records = read_topic(&env.kafka, &env.kafka.events_topic).await.ok()?;
        (!records.is_empty()).then_some(records)
    })
    .await?;
    assert_eq!(records[0].header("ce_correlationid"), Some("order-4711"));
    assert_eq!(records[0].header("ce_actor"), Some("api_key:integration"));
    assert_eq!(records[0].header("ce_authtype"), Some("api_key"));
    assert_eq!(records[0].header("ce_authid"), Some("integration"));
    let actor: String = sqlx::query_scalar("select actor from events").fetch_one(&env.pool().await?).await?;
    assert_eq!(actor, "api_key:integration");
    app.shutdown().await
}

/// Waits until `n` rows of the outbox are relayed.
async fn relayed(pool: &sqlx::PgPool, n: i64, within: Duration) -> anyhow::Result<()> {
    eventually(within, "the rows to be relayed", || async {
        let (done,): (i64,) =
            sqlx::query_as("select count(*) from outbox where relayed_at is not null").fetch_one(pool).await.ok()?;
        (done >= n).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_wakes_the_relay_of_its_own_instance_and_of_another_one() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    // The safety-net poll is an hour: only the wake-ups can make rows move.
    let with_poll = |relay: bool| {
        let mut s = settings(&env, relay);
        s.relay.idle_poll_ms = 3_600_000;
        s
    };
    let leader = start(with_poll(true)).await?;
    let pool = env.pool().await?;
    let http = reqwest::Client::new();
    // Relayed by the relay's first round once it leads (or by a notification before).
    seed(&http, &leader.url, "ART-FIRST", 1).await?;
    relayed(&pool, 3, Duration::from_secs(30)).await?;
    // Later commits of the leading instance: only the in-process wake-up moves them.
    seed(&http, &leader.url, "ART-OWN", 1).await?;
    relayed(&pool, 6, Duration::from_secs(20)).await?;
    // Another instance without a relay: its commits notify the leader through PostgreSQL.
    let other = start(with_poll(false)).await?;
    seed(&http, &other.url, "ART-OTHER", 1).await?;
    relayed(&pool, 9, Duration::from_secs(20)).await?;
    other.shutdown().await?;
    leader.shutdown().await
}
