//! The check that ends every fault case: the accepted commands, the topic
//! and the read models agree, and no stock is negative.
//!
//! 1. Every accepted command's events are in the event store, and nothing
//!    else is (a refused or unresolved command left no trace).
//! 2. The topic holds exactly those events: each event id once after
//!    removing the relay's redeliveries (which must be byte-for-byte copies),
//!    every stream's sequences 1..n without a gap.
//! 3. The query-service's stock of every article equals an independent fold
//!    of the topic: version, and on hand and reserved per charge and
//!    warehouse.
//! 4. No bucket of the fold or of the served documents has negative stock
//!    on hand or available.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use events::{ArticleState, RecordedEvent, evolve};
use serde_json::Value;
use sqlx::PgPool;
use testkit::{TestEnv, TopicRecord, eventually, read_topic};

use crate::load::Ledger;

/// On hand and reserved per (charge, warehouse), buckets with neither left out.
type Buckets = BTreeMap<(String, String), (i64, i64)>;

/// Waits until the query-service serves every stream at least at the
/// sequence `heads` names; returns how long that took.
pub async fn visible(query_url: &str, heads: &BTreeMap<String, u64>, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let http = crate::http_builder().timeout(Duration::from_secs(5)).build()?;
    let mut waiting: Vec<(&String, u64)> = heads.iter().map(|(s, h)| (s, *h)).collect();
    while !waiting.is_empty() {
        anyhow::ensure!(started.elapsed() < timeout, "after {timeout:?} the query-service still lags on {waiting:?}");
        let mut still = Vec::new();
        for (stream, head) in waiting {
            let article = stream.strip_prefix("article:").unwrap_or(stream);
            let served = match http.get(format!("{query_url}/articles/{article}/stock")).send().await {
                Ok(r) if r.status() == 200 => r.json::<Value>().await.ok().and_then(|d| d["version"].as_u64()),
                _ => None,
            };
            if served.is_none_or(|v| v < head) {
                still.push((stream, head));
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(started.elapsed())
}

/// Waits until every event of the event store is relayed.
pub async fn relayed(pool: &PgPool) -> anyhow::Result<()> {
    eventually(Duration::from_secs(90), "the outbox to drain", || async {
        let pending: i64 = sqlx::query_scalar("select count(*) from outbox where relayed_at is null").fetch_one(pool).await.ok()?;
        (pending == 0).then_some(())
    })
    .await
}

/// The whole check, once the load has stopped. `query_url` is a running query-service.
pub async fn agree(env: &TestEnv, pool: &PgPool, query_url: &str, ledger: &Ledger) -> anyhow::Result<()> {
    anyhow::ensure!(ledger.failures.is_empty(), "clients saw {} failures: {:#?}", ledger.failures.len(), ledger.failures);
    relayed(pool).await?;
    visible(query_url, &ledger.heads(), Duration::from_secs(90)).await?;

    // 1. The event store holds exactly the accepted commands' events.
    let stored: Vec<(String, String, i64)> =
        sqlx::query_as("select event_id::text, stream_id, sequence from events").fetch_all(pool).await?;
    let stored_ids: BTreeSet<&str> = stored.iter().map(|(id, ..)| id.as_str()).collect();
    let accepted_ids: BTreeSet<&str> = ledger.accepted.iter().flat_map(|a| a.event_ids.iter().map(String::as_str)).collect();
    anyhow::ensure!(
        stored_ids == accepted_ids,
        "the event store and the accepted commands differ: {} stored, {} accepted, {} stored but not accepted, {} accepted but not stored",
        stored_ids.len(),
        accepted_ids.len(),
        stored_ids.difference(&accepted_ids).count(),
        accepted_ids.difference(&stored_ids).count()
    );

    // 2. The topic holds each of them once, redeliveries aside.
    let records = read_topic(&env.kafka, &env.kafka.events_topic).await?;
    let mut unique: BTreeMap<&str, &TopicRecord> = BTreeMap::new();
    for r in &records {
        let id = r.header("ce_id").ok_or_else(|| anyhow::anyhow!("a record without ce_id at {}/{}", r.partition, r.offset))?;
        if let Some(first) = unique.insert(id, r) {
            anyhow::ensure!(first.payload == r.payload && first.headers == r.headers, "event {id} is on the topic twice, differently");
        }
    }
    let topic_ids: BTreeSet<&str> = unique.keys().copied().collect();
    anyhow::ensure!(
        topic_ids == stored_ids,
        "the topic and the event store differ: {} on the topic, {} stored",
        topic_ids.len(),
        stored_ids.len()
    );
    let mut streams: BTreeMap<String, Vec<RecordedEvent>> = BTreeMap::new();
    for r in unique.values() {
        let event = RecordedEvent::from_cloudevent(|name| r.header(name), &r.payload)?;
        streams.entry(event.stream_id.to_string()).or_default().push(event);
    }

    // 3 and 4. An independent fold of the topic equals what is served; nothing negative.
    let http = crate::http();
    for (stream, mut events) in streams {
        events.sort_by_key(|e| e.sequence);
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        anyhow::ensure!(sequences.iter().copied().eq(1..=sequences.len() as u64), "{stream} on the topic: {sequences:?}");
        let mut state = ArticleState::default();
        for event in events {
            state = evolve(state, &event.into_envelope()?.event);
        }
        let folded = buckets_of_state(&state);
        for ((charge, warehouse), (on_hand, reserved)) in &folded {
            anyhow::ensure!(*on_hand >= 0 && on_hand - reserved >= 0, "{stream} {charge}/{warehouse}: {on_hand} on hand, {reserved} reserved");
        }
        let article = stream.strip_prefix("article:").unwrap_or(&stream);
        let doc: Value = http.get(format!("{query_url}/articles/{article}/stock")).send().await?.error_for_status()?.json().await?;
        anyhow::ensure!(doc["version"].as_u64() == Some(state.version), "{stream}: served version {} vs {}", doc["version"], state.version);
        let served = buckets_of_document(&doc);
        anyhow::ensure!(served == folded, "{stream}: served {served:?}, folded {folded:?}");
        for charge in doc["charges"].as_array().into_iter().flatten() {
            for w in charge["warehouses"].as_array().into_iter().flatten() {
                anyhow::ensure!(w["available"].as_i64().is_some_and(|a| a >= 0), "{stream}: negative availability served: {w}");
            }
        }
    }
    Ok(())
}

fn buckets_of_state(state: &ArticleState) -> Buckets {
    let mut buckets = Buckets::new();
    for (charge, c) in &state.charges {
        for (warehouse, b) in &c.stock {
            if b.on_hand != 0 || b.reserved != 0 {
                buckets.insert((charge.to_string(), warehouse.to_string()), (b.on_hand, b.reserved));
            }
        }
    }
    buckets
}

fn buckets_of_document(doc: &Value) -> Buckets {
    let mut buckets = Buckets::new();
    for charge in doc["charges"].as_array().into_iter().flatten() {
        let name = charge["charge"].as_str().unwrap_or_default();
        for w in charge["warehouses"].as_array().into_iter().flatten() {
            let (on_hand, reserved) = (w["on_hand"].as_i64().unwrap_or(i64::MIN), w["reserved"].as_i64().unwrap_or(i64::MIN));
            if on_hand != 0 || reserved != 0 {
                buckets.insert((name.to_owned(), w["warehouse"].as_str().unwrap_or_default().to_owned()), (on_hand, reserved));
            }
        }
    }
    buckets
}
