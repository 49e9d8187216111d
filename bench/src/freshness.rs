//! Projector freshness: one event at a time at a steady rate is produced to
//! the topic of a running projector; from the broker's acknowledgement until
//! the stream's position in PostgreSQL shows it (polled every millisecond),
//! and until its invalidation arrives on the Redis channel (published after
//! the documents are written). Run by `bench projector` with the catch-up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use events::Envelope;
use futures::StreamExt;
use sqlx::PgPool;
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::TestEnv;
use testkit::events::cloudevent;

use crate::projector::{history, spawn_projector};
use crate::stats::{ms, summarize};

/// Steady-state freshness at `rate` events per second for `seconds`.
///
/// A producer task sends the events at the rate (one at a time, each
/// acknowledged); a watcher polls the streams' positions in PostgreSQL every
/// millisecond; another follows the invalidation channel and, for every
/// announced article, reads its document's version from Redis. An event is
/// visible once the position (PostgreSQL) or the version (Redis) reaches it.
pub(crate) async fn freshness(rate: u32, seconds: u64) -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};

    let env = TestEnv::new(4).await?;
    let mut child = spawn_projector(&env, None)?;
    let pool = env.pool().await?;
    let producer: FutureProducer = env.kafka.client_config().set("acks", "all").set("linger.ms", "0").create()?;
    let articles = 100;
    let total = rate as usize * seconds as usize;
    let envelopes = history(articles, 3 + total / articles + 1, 0.0);
    let (setup, measured) = envelopes.split_at(articles * 3);
    let measured: Vec<Envelope> = measured.iter().take(total).cloned().collect();
    for e in setup {
        let (key, headers, value) = cloudevent(e);
        send(&producer, &env.kafka.events_topic, &key, &headers, &value).await?;
    }
    let streams: Vec<String> = (0..articles).map(|a| format!("article:B-{a}")).collect();
    let positions = |pool: PgPool, streams: Vec<String>| async move {
        sqlx::query_as::<_, (String, i64)>("select stream_id, sequence from rm_1.streams where stream_id = any($1)")
            .bind(streams)
            .fetch_all(&pool)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect::<HashMap<String, i64>>()
    };
    // Wait until the setup events are applied.
    loop {
        let p = positions(pool.clone(), streams.clone()).await;
        if p.len() == articles && p.values().all(|s| *s >= 3) {
            break;
        }
        anyhow::ensure!(child.try_wait()?.is_none(), "the projector exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Per event: (stream, sequence, acknowledged, visible in PostgreSQL, visible in Redis).
    type Seen = (String, i64, Option<Instant>, Option<Duration>, Option<Duration>);
    let seen: Arc<Mutex<Vec<Seen>>> =
        Arc::new(Mutex::new(measured.iter().map(|e| (e.stream_id.to_string(), e.sequence as i64, None, None, None)).collect()));
    let mark = |seen: &Mutex<Vec<Seen>>, stream: &str, upto: i64, redis: bool| {
        let now = Instant::now();
        for s in seen.lock().unwrap().iter_mut().filter(|s| s.0 == stream && s.1 <= upto) {
            let Some(acked) = s.2 else { continue };
            let slot = if redis { &mut s.4 } else { &mut s.3 };
            slot.get_or_insert(now.duration_since(acked));
        }
    };
    let pg_watch = {
        let (seen, pool, streams) = (seen.clone(), pool.clone(), streams.clone());
        tokio::spawn(async move {
            loop {
                for (stream, sequence) in positions(pool.clone(), streams.clone()).await {
                    mark(&seen, &stream, sequence, false);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let redis_watch = {
        let seen = seen.clone();
        let settings = env.redis.clone();
        let client = redis::Client::open(settings.url.as_str())?;
        let mut reader = client.get_multiplexed_async_connection().await?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(settings.invalidation_channel()).await?;
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(m) = messages.next().await {
                let payload: String = m.get_payload().unwrap_or_default();
                for article in payload.lines().filter_map(|t| t.strip_prefix("article:")) {
                    let key = settings.doc_key(1, &format!("stock:{article}"));
                    let doc: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut reader).await.unwrap_or(None);
                    let version = doc
                        .and_then(|d| std::str::from_utf8(&d[..d.iter().position(|b| *b == b'\n')?]).ok()?.parse::<i64>().ok());
                    if let Some(version) = version {
                        mark(&seen, &format!("article:{article}"), version, true);
                    }
                }
            }
        })
    };

    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = Instant::now();
    for (i, e) in measured.iter().enumerate() {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let (key, headers, value) = cloudevent(e);
        send(&producer, &env.kafka.events_topic, &key, &headers, &value).await?;
        seen.lock().unwrap()[i].2 = Some(Instant::now());
    }
    let sent = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().iter().any(|s| s.3.is_none() || s.4.is_none()) {
        anyhow::ensure!(Instant::now() < deadline, "events not visible 30 s after the last was sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg_watch.abort();
    redis_watch.abort();
    child.kill().await?;
    let seen = seen.lock().unwrap().clone();
    let (pg, redis) = (
        summarize(seen.iter().map(|s| s.3.unwrap()).collect(), sent),
        summarize(seen.iter().map(|s| s.4.unwrap()).collect(), sent),
    );
    println!("\nfreshness: {total} events at {rate}/s ({:.0}/s achieved) over {articles} articles, each from the broker's", total as f64 / sent.as_secs_f64());
    println!("acknowledgement until visible (PostgreSQL: the stream's position, polled every ms; Redis: the document's version,");
    println!("read when its invalidation arrives)\n");
    println!("| visible in | p50 | p99 |");
    println!("|---|---:|---:|");
    println!("| PostgreSQL | {} | {} |", ms(pg.p50), ms(pg.p99));
    println!("| Redis | {} | {} |", ms(redis.p50), ms(redis.p99));
    Ok(())
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, headers: &[(String, String)], value: &[u8]) -> anyhow::Result<()> {
    let mut hs = rdkafka::message::OwnedHeaders::new();
    for (k, v) in headers {
        hs = hs.insert(rdkafka::message::Header { key: k, value: Some(v.as_bytes()) });
    }
    let record = FutureRecord::to(topic).key(key).payload(value).headers(hs);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    Ok(())
}

