//! The event log outlives the broker's retention and the loss of the topic or
//! the database: topics are created to keep events for good and a topic that
//! would delete them is refused; a lost topic is republished from the event
//! store (resumably) and the read models rebuilt from it equal the live ones;
//! a database dump restored into an empty database brings the system back
//! with equal read models and new commands flowing.

use std::time::Duration;

use anyhow::Context;

use e2e::{Service, caught_up, post_history, run_command};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use testkit::{TestEnv, eventually, read_topic};

/// Creates `topic` with Kafka's default week of retention.
async fn topic_with_a_week_of_retention(env: &TestEnv, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = env.kafka.client_config().create()?;
    let new = NewTopic::new(topic, 2, TopicReplication::Fixed(1)).set("retention.ms", "604800000");
    for result in admin.create_topics(&[new], &AdminOptions::new()).await? {
        result.map_err(|(name, code)| anyhow::anyhow!("creating {name}: {code}"))?;
    }
    Ok(())
}

/// The one JSON line an admin command printed.
fn report(output: &str) -> anyhow::Result<Value> {
    serde_json::from_str(output.trim()).with_context(|| format!("not one JSON report: {output:?}"))
}

async fn checksum(env: &TestEnv) -> anyhow::Result<Value> {
    report(&run_command("projector", env, &["checksum"]).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn services_refuse_an_events_topic_whose_retention_would_delete_events_unless_told_otherwise() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    // The topics the services create keep events for good.
    assert_eq!(platform::kafka::retention_refusal(&env.kafka).await?, None);

    let deleting = format!("{}-week", env.kafka.events_topic);
    topic_with_a_week_of_retention(&env, &deleting).await?;
    let mut on_deleting = env.clone();
    on_deleting.kafka.events_topic = deleting.clone();
    for name in ["projector", "command-service"] {
        // Started as the service itself (no subcommand): it must exit at once.
        let ran = tokio::time::timeout(Duration::from_secs(30), run_command(name, &on_deleting, &[])).await;
        let refusal = match ran {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => panic!("{name} exited cleanly on a topic that deletes events"),
            Err(_) => panic!("{name} kept running on a topic that deletes events"),
        };
        assert!(refusal.contains("retention.ms=604800000"), "{name} names the setting: {refusal}");
        assert!(refusal.contains("APP_KAFKA__ALLOW_FINITE_RETENTION"), "{name} says how to override: {refusal}");
    }
    let allowed = [("APP_KAFKA__EVENTS_TOPIC", deleting), ("APP_KAFKA__ALLOW_FINITE_RETENTION", "true".to_owned())];
    let projector = Service::start("projector", &env, &allowed).await?;
    projector.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_topic_is_republished_from_the_event_store_and_the_read_models_rebuilt_from_it_are_equal() -> anyhow::Result<()> {
    let env = TestEnv::new(3).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 10).await?;
    caught_up(&pool).await?;
    let live = checksum(&env).await?;
    projector.stop().await?;
    let (stored,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&pool).await?;

    // Into the live topic: refused, it would hold every event twice.
    let refused = run_command("command-service", &env, &["republish", "--topic", &env.kafka.events_topic]).await.unwrap_err();
    assert!(refused.to_string().contains("already holds"), "{refused}");

    // Killed part-way, then run again: it resumes, and every event is on the topic.
    let topic = format!("{}-republished", env.kafka.events_topic);
    let republish = |extra: &'static [&'static str]| {
        let topic = topic.clone();
        let env = env.clone();
        async move {
            let mut args = vec!["republish", "--topic", topic.as_str()];
            args.extend_from_slice(extra);
            run_command("command-service", &env, &args).await
        }
    };
    let mut slow = e2e::admin_command("command-service", &env, &["republish", "--topic", &topic, "--batch-size", "1"]).spawn()?;
    eventually(Duration::from_secs(60), "the first run to publish 20 events", || async {
        let published: i64 =
            sqlx::query_scalar("select published from republish_progress where topic = $1").bind(&topic).fetch_optional(&pool).await.ok()??;
        (published >= 20).then_some(())
    })
    .await?;
    slow.kill().await?;
    let resumed = report(&republish(&["--batch-size", "7"]).await?)?;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["total"].as_i64(), Some(stored), "{resumed}");
    let records = read_topic(&env.kafka, &topic).await?;
    let ids: std::collections::BTreeSet<&str> = records.iter().filter_map(|r| r.header("ce_id")).collect();
    assert_eq!(ids.len() as i64, stored, "every event once, after repeats are removed");
    assert!(records.len() as i64 - stored <= 1, "at most the unconfirmed batch of one was sent twice");

    // The read models rebuilt from the new topic equal the live ones.
    let on_new = TestEnv { kafka: platform::kafka::KafkaSettings { events_topic: topic.clone(), ..env.kafka.clone() }, ..env.clone() };
    let rebuilt = report(&run_command("projector", &on_new, &["rebuild", "--keep-old-secs", "0"]).await?)?;
    assert_eq!(rebuilt["checksum"], live["checksum"]);

    // And the system runs on the new topic: a new command is applied.
    command.stop().await?;
    let command = Service::start("command-service", &on_new, &[]).await?;
    let projector = Service::start("projector", &on_new, &[]).await?;
    let r = e2e::http()
        .post(format!("{}/stock/receipts", command.base_url))
        .json(&json!({ "article": "ART-2", "charge": "L1", "warehouse": "W1", "quantity": 5 }))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    caught_up(&pool).await?;
    for service in [projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_restored_into_an_empty_database_brings_the_system_back_with_equal_read_models() -> anyhow::Result<()> {
    let env = TestEnv::new(3).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 6).await?;
    caught_up(&pool).await?;
    let before = checksum(&env).await?;
    let (stored,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&pool).await?;

    let file = std::env::temp_dir().join(format!("erp-dump-{}.pgdump", env.id));
    let database = env.database.url.rsplit('/').next().unwrap().to_owned();
    let restored = format!("{database}_restored");
    let topic = format!("{}-restored", env.kafka.events_topic);
    let script = |args: Vec<String>, database: &str| {
        let mut command = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/backup.sh"));
        command
            .args(args)
            .env("ERP_PG_DATABASE", database)
            .env("ERP_KAFKA_BROKERS", &env.kafka.brokers)
            .env("ERP_REDIS_URL", &env.redis.url)
            .env("ERP_BIN_DIR", e2e::binary_dir());
        command.output()
    };
    let dumped = script(vec!["dump".into(), file.display().to_string()], &database)?;
    assert!(dumped.status.success(), "{}", String::from_utf8_lossy(&dumped.stderr));
    // Restoring over a database that holds events is refused.
    let over = script(vec!["restore".into(), file.display().to_string(), topic.clone()], &database)?;
    assert!(!over.status.success());
    assert!(String::from_utf8_lossy(&over.stderr).contains("already holds an event store"));
    let restore = script(vec!["restore".into(), file.display().to_string(), topic.clone()], &restored)?;
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    for service in [projector, command] {
        service.stop().await?;
    }

    let mut back = env.clone();
    back.database.url = env.database.url.replace(&database, &restored);
    back.kafka.events_topic = topic;
    let after = checksum(&back).await?;
    assert_eq!(after["checksum"], before["checksum"], "the restored read models equal the ones dumped");
    let restored_pool = back.pool().await?;
    let (count,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&restored_pool).await?;
    assert_eq!(count, stored);

    let command = Service::start("command-service", &back, &[]).await?;
    let projector = Service::start("projector", &back, &[]).await?;
    let query = Service::start("query-service", &back, &[]).await?;
    let http = e2e::http();
    let r = http
        .post(format!("{}/stock/receipts", command.base_url))
        .json(&json!({ "article": "ART-1", "charge": "L1", "warehouse": "W1", "quantity": 5 }))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await?["consistency_token"].as_str().unwrap().to_owned();
    let fresh: Value = http
        .get(format!("{}/articles/ART-1/stock", query.base_url))
        .header("x-consistency-token", &token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(fresh["version"].as_u64(), token.rsplit('@').next().unwrap().parse().ok());
    eventually(Duration::from_secs(30), "Redis to hold the restored documents", || async {
        let mut redis = redis::Client::open(back.redis.url.as_str()).ok()?.get_multiplexed_async_connection().await.ok()?;
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}*doc:stock:ART-1", back.redis.key_prefix)).query_async(&mut redis).await.ok()?;
        (!keys.is_empty()).then_some(())
    })
    .await?;
    std::fs::remove_file(&file)?;
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}
