//! The invariants hold under concurrent commands, also from two instances on
//! one database.

mod common;

use common::*;
use serde_json::json;
use testkit::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_issues_of_one_against_a_hundred_on_hand_over_two_instances_accept_exactly_a_hundred()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let a = start(settings(&env, false)).await?;
    let b = start(settings(&env, false)).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    seed(&http, &a.url, "ART-STORM", 100).await?;

    let requests = (0..200).map(|i| {
        let http = http.clone();
        let url = format!("{}/stock/issues", if i % 2 == 0 { &a.url } else { &b.url });
        tokio::spawn(async move {
            post(&http, &url, json!({ "article": "ART-STORM", "charge": "L1", "warehouse": "WH", "quantity": 1 })).await
        })
    });
    let mut statuses = Vec::new();
    for request in futures::future::join_all(requests).await {
        let (status, body) = request??;
        if status == 409 {
            assert_eq!(body["rule"], "insufficient-stock", "refused for the stock, not for contention: {body}");
        }
        statuses.push(status);
    }
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((accepted, refused), (100, 100), "statuses: {statuses:?}");

    // The stored stream agrees: 100 issues, a balance of exactly 0, and every
    // issue's balance was non-negative on the way.
    let pool = env.pool().await?;
    let balances: Vec<(i64,)> = sqlx::query_as(
        "select (data->>'on_hand_after')::bigint from events
         where stream_id = 'article:ART-STORM' and event_type = 'StockIssued' order by sequence",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(balances.len(), 100);
    assert!(balances.iter().all(|(b,)| *b >= 0));
    assert_eq!(balances.last().map(|b| b.0), Some(0));
    let (sequences, max): (i64, i64) =
        sqlx::query_as("select count(*), max(sequence) from events where stream_id = 'article:ART-STORM'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(sequences, max, "sequences are gap-free");

    a.shutdown().await?;
    b.shutdown().await
}

/// An instance that has not seen an article loads it from the stored
/// snapshot and the events after it, and decides exactly as the instance
/// that wrote them would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_decides_from_the_stored_snapshot_and_the_events_after_it() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let a = start(settings(&env, false)).await?;
    let http = reqwest::Client::new();
    seed(&http, &a.url, "ART-SNAP", 0).await?;
    // Past the first snapshot (every 100 events), with events after it.
    for _ in 0..130 {
        let receipt = json!({ "article": "ART-SNAP", "charge": "L1", "warehouse": "WH", "quantity": 2 });
        let (status, body) = post(&http, &format!("{}/stock/receipts", a.url), receipt).await?;
        assert_eq!(status, 201, "{body}");
    }
    let pool = env.pool().await?;
    let (version, on_hand): (i64, i64) = sqlx::query_as(
        "select version, (state->'charges'->'L1'->'stock'->'WH'->>'on_hand')::bigint from stream_snapshots
         where stream_id = 'article:ART-SNAP'",
    )
    .fetch_one(&pool)
    .await?;
    let (stored,): (i64,) = sqlx::query_as("select version from event_streams where stream_id = 'article:ART-SNAP'")
        .fetch_one(&pool)
        .await?;
    assert!(version >= 100 && version < stored, "a snapshot with events after it: {version} of {stored}");
    assert!(on_hand > 0);

    // A second instance has nothing in memory: one unit too many is refused
    // with the exact numbers, all that is there is accepted.
    let b = start(settings(&env, false)).await?;
    let issue = |quantity: i64| json!({ "article": "ART-SNAP", "charge": "L1", "warehouse": "WH", "quantity": quantity });
    let (status, body) = post(&http, &format!("{}/stock/issues", b.url), issue(261)).await?;
    assert_eq!(status, 409, "{body}");
    assert_eq!((body["available"].as_i64(), body["requested"].as_i64()), (Some(260), Some(261)), "{body}");
    let (status, body) = post(&http, &format!("{}/stock/issues", b.url), issue(260)).await?;
    assert_eq!(status, 201, "{body}");
    a.shutdown().await?;
    b.shutdown().await
}
