//! The projector as a process against the real broker: poison is parked (in
//! the table and on the dead-letter topic) and halts only its stream until it
//! is re-driven; a rebuild replays into a new generation equal to the live
//! one and swaps while the query-service serves; two instances build what
//! one would; Redis converges after a crash between the PostgreSQL commit and
//! the Redis write, and after a flush.

use std::time::Duration;

use chrono::{DateTime, Utc};
use e2e::{Service, caught_up, post_history, run_command};
use events::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::events::{Producer, Streams};
use testkit::{TestEnv, eventually, read_topic};

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn register(id: &str) -> Command {
    testkit::commands::register(id, &format!("Article {id}"), "bolts", None)
}

fn charge(id: &str) -> Command {
    testkit::commands::charge(id, "C1", "2026-11-01", None)
}

fn receipt(id: &str, n: i64) -> Command {
    testkit::commands::receipt(id, "C1", "W1", n, None)
}

async fn on_hand(pool: &PgPool, schema: &str, article: &str) -> Option<i64> {
    sqlx::query_scalar(&format!(
        "select (convert_from(body, 'UTF8')::jsonb ->> 'on_hand')::int8 from {schema}.documents where key = 'stock:' || $1"
    ))
        .bind(article)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_is_parked_on_the_dead_letter_topic_and_halts_only_its_stream_until_redriven() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let pool = env.pool().await?;
    let producer = Producer::new(&env.kafka, &env.kafka.events_topic)?;
    let mut streams = Streams::default();
    let mut a = Vec::new();
    for c in [register("A"), charge("A"), receipt("A", 5), receipt("A", 6)] {
        a.extend(streams.decide(c, now()));
    }
    let mut b = Vec::new();
    for c in [register("B"), charge("B"), receipt("B", 3)] {
        b.extend(streams.decide(c, now()));
    }
    // A's third event is missing at first (a gap), and an undecodable record
    // without a stream comes along.
    for e in [&a[0], &a[1], &a[3]] {
        producer.event(e).await?;
    }
    producer.raw(None, &[], b"not an event").await?;
    for e in &b {
        producer.event(e).await?;
    }
    eventually(Duration::from_secs(30), "B to be applied", || async { on_hand(&pool, "rm_1", "B").await.filter(|n| *n == 3) })
        .await?;
    assert_eq!(on_hand(&pool, "rm_1", "A").await, Some(0), "A waits behind the gap");

    let parked: Vec<Value> = run_command("projector", &env, &["dead-letters", "list"])
        .await?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let reasons: Vec<&str> = parked.iter().map(|p| p["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["gap", "undecodable"], "{parked:?}");
    assert_eq!(parked[0]["stream_id"], "article:A");

    // The poison is on the dead-letter topic, with where it came from.
    let dlq = projector::dead_letters::topic_of(&env.kafka.events_topic);
    let copies = read_topic(&env.kafka, &dlq).await?;
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0].header("dlq_reason"), Some("gap"));
    assert_eq!(copies[0].header("dlq_offset"), Some("2"));
    assert_eq!(copies[0].header("ce_sequence"), Some("4"));
    assert!(copies[1].header("dlq_error").is_some_and(|e| e.contains("missing")), "{:?}", copies[1].headers);

    // The missing event arrives (republished), and is parked behind the gap.
    producer.event(&a[2]).await?;
    eventually(Duration::from_secs(30), "the late event to be parked", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from rm_1.dead_letters where reason = 'halted'").fetch_one(&pool).await.ok()?;
        (n == 1).then_some(())
    })
    .await?;
    let report = run_command("projector", &env, &["dead-letters", "redrive", "--stream", "article:A"]).await?;
    let report: Value = serde_json::from_str(report.trim())?;
    assert_eq!((report["applied"].as_u64(), report["still_parked"].as_u64()), (Some(2), Some(0)), "{report}");
    assert_eq!(on_hand(&pool, "rm_1", "A").await, Some(11));
    let halted: i64 = sqlx::query_scalar("select count(*) from rm_1.streams where halted").fetch_one(&pool).await?;
    assert_eq!(halted, 0);

    // A skip of a record that is not the next of its stream is refused with the reason.
    let undecodable = parked[1]["id"].as_i64().unwrap().to_string();
    let refused = run_command("projector", &env, &["dead-letters", "skip", &undecodable]).await.unwrap_err();
    assert!(refused.to_string().contains("belongs to no stream"), "{refused}");
    projector.stop().await
}

async fn checksum(env: &TestEnv) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(run_command("projector", env, &["checksum"]).await?.trim())?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_equals_the_live_read_models_and_swaps_while_the_query_service_serves() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 12).await?;
    caught_up(&pool).await?;
    let live = checksum(&env).await?;
    assert_eq!(live["generation"], 1);

    let http = e2e::http();
    let url = format!("{}/articles/ART-3/stock", query.base_url);
    let before: Value = http.get(&url).send().await?.json().await?;
    // Readers keep getting answers during the whole rebuild.
    let reader = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let mut answers = 0;
            loop {
                let response = http.get(&url).send().await?;
                anyhow::ensure!(response.status() == 200, "a read during the rebuild answered {}", response.status());
                answers += 1;
                if answers >= 1000 {
                    return anyhow::Ok(answers);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let report: Value = serde_json::from_str(run_command("projector", &env, &["rebuild", "--keep-old-secs", "1"]).await?.trim())?;
    assert_eq!((report["generation"].as_i64(), report["replaced"].as_i64()), (Some(2), Some(1)));
    assert_eq!(report["checksum"], live["checksum"], "the rebuilt read models equal the live ones");
    assert!(reader.await?? > 0);
    let after = checksum(&env).await?;
    assert_eq!(after["generation"], 2);
    assert_eq!(after["checksum"], live["checksum"]);
    let dropped: String = sqlx::query_scalar("select status from read_model_generations where generation = 1").fetch_one(&pool).await?;
    assert_eq!(dropped, "dropped");

    // The query-service follows the swap, and the live projector continues in the new generation.
    let served: Value = http.get(&url).send().await?.json().await?;
    assert_eq!(served, before);
    let r = http
        .post(format!("{}/stock/receipts", command.base_url))
        .json(&json!({ "article": "ART-3", "charge": "L1", "warehouse": "W1", "quantity": 1 }))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await?["consistency_token"].as_str().unwrap().to_owned();
    let fresh: Value = http.get(&url).header("x-consistency-token", &token).send().await?.json().await?;
    assert_eq!(fresh["on_hand"].as_i64(), before["on_hand"].as_i64().map(|n| n + 1));
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_projectors_split_the_partitions_and_build_what_one_would() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let first = Service::start("projector", &env, &[]).await?;
    let second = Service::start("projector", &env, &[]).await?;
    let pool = env.pool().await?;
    let url = command.base_url.clone();
    let writer = tokio::spawn(async move { post_history(&url, 16).await });
    // One instance leaves and comes back while events flow: partitions move twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.stop().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = Service::start("projector", &env, &[]).await?;
    writer.await??;
    caught_up(&pool).await?;
    let both = checksum(&env).await?;
    let report: Value = serde_json::from_str(run_command("projector", &env, &["rebuild", "--keep-old-secs", "0"]).await?.trim())?;
    assert_eq!(report["checksum"], both["checksum"], "one instance replaying alone builds the same read models");
    for service in [second, first, command] {
        service.stop().await?;
    }
    Ok(())
}

async fn redis_doc(env: &TestEnv, generation: i64, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let mut redis = redis::Client::open(env.redis.url.as_str())?.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("GET").arg(env.redis.doc_key(generation, key)).query_async(&mut redis).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_converges_after_a_crash_between_commit_and_redis_write_and_after_a_flush() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let redis_target = env.redis.url.trim_start_matches("redis://").split('/').next().unwrap().to_owned();
    let proxy = testkit::proxy::TcpProxy::start(&redis_target).await?;
    let through_proxy = [("APP_REDIS__URL", proxy.url_for(&env.redis.url))];
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &through_proxy).await?;
    let pool = env.pool().await?;
    let http = e2e::http();
    let post = |path: &str, body: Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    post("/articles", json!({ "article": "ART-R", "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
    post("/articles/ART-R/charges", json!({ "charge": "L1", "production_date": "2026-11-01" })).await?;
    caught_up(&pool).await?;
    eventually(Duration::from_secs(30), "the document in Redis", || async {
        redis_doc(&env, 1, "stock:ART-R").await.ok().flatten()
    })
    .await?;

    // Redis becomes unreachable for the projector: it commits to PostgreSQL,
    // cannot write Redis, and is killed there.
    proxy.down();
    for _ in 0..3 {
        let r = post("/stock/receipts", json!({ "article": "ART-R", "charge": "L1", "warehouse": "W1", "quantity": 2 })).await?;
        assert_eq!(r.status(), 201);
    }
    caught_up(&pool).await?;
    let pending: i64 = sqlx::query_scalar("select count(*) from rm_1.redis_outbox").fetch_one(&pool).await?;
    assert!(pending > 0, "the batches' documents wait in the Redis outbox");
    projector.kill().await?;
    let stale = redis_doc(&env, 1, "stock:ART-R").await?.unwrap();
    assert!(stale.starts_with(b"2\n"), "Redis still has the version before the receipts");

    // A new instance replays what Redis missed.
    proxy.up();
    let projector = Service::start("projector", &env, &[]).await?;
    let doc = eventually(Duration::from_secs(30), "Redis to converge", || async {
        redis_doc(&env, 1, "stock:ART-R").await.ok().flatten().filter(|d| d.starts_with(b"5\n"))
    })
    .await?;
    let body: Value = serde_json::from_slice(&doc[2..])?;
    assert_eq!(body["on_hand"], 6);

    // Every key of this deployment is flushed: the projector copies them back by itself.
    let mut redis = redis::Client::open(env.redis.url.as_str())?.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", env.redis.key_prefix)).query_async(&mut redis).await?;
    assert!(!keys.is_empty());
    redis::cmd("DEL").arg(&keys).query_async::<()>(&mut redis).await?;
    eventually(Duration::from_secs(30), "Redis to be refilled", || async {
        redis_doc(&env, 1, "stock:ART-R").await.ok().flatten().filter(|d| d.starts_with(b"5\n"))
    })
    .await?;
    for service in [projector, command] {
        service.stop().await?;
    }
    Ok(())
}
