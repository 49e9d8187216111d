//! The relay is killed (SIGKILL) in the middle of its work and restarted: every
//! event reaches the topic, at most the unconfirmed ones twice, and the read
//! models are not affected by the duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::Service;
use serde_json::{Value, json};
use testkit::{TestEnv, eventually, read_topic};

const ARTICLES: usize = 4;
const RECEIPTS: usize = 40;

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_killed_mid_batch_resends_only_what_was_unconfirmed_and_read_models_stay_exact() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let no_relay = [("APP_RELAY__ENABLED", "false".to_owned())];
    let writer = Service::start("command-service", &env, &no_relay).await?;
    let http = e2e::http();
    let post = |path: &str, body: Value| http.post(format!("{}{path}", writer.base_url)).json(&body).send();
    for a in 0..ARTICLES {
        let article = format!("ART-{a}");
        let r = post("/articles", json!({ "article": article, "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
        assert_eq!(r.status(), 201);
        let r = post(&format!("/articles/{article}/charges"), json!({ "charge": "L1", "production_date": "2026-11-01" })).await?;
        assert_eq!(r.status(), 201);
        for _ in 0..RECEIPTS {
            let r = post("/stock/receipts", json!({ "article": article, "charge": "L1", "warehouse": "WH", "quantity": 2 })).await?;
            assert_eq!(r.status(), 201);
        }
    }
    let total = (ARTICLES * (RECEIPTS + 2)) as i64;
    let pool = env.pool().await?;
    let relayed = || async {
        let (n,): (i64,) =
            sqlx::query_as("select count(*) from outbox where relayed_at is not null").fetch_one(&pool).await.ok()?;
        Some(n)
    };

    // A relay that works one row at a time, so it is surely killed mid-way.
    let slow = [
        ("APP_RELAY__ENABLED", "true".to_owned()),
        ("APP_RELAY__BATCH_SIZE", "1".to_owned()),
        ("APP_HTTP__PORT", "0".to_owned()),
    ];
    let relay = Service::spawn("command-service", &env, &slow).await?;
    eventually(Duration::from_secs(60), "the relay to start relaying", || async {
        relayed().await.filter(|n| *n >= 10)
    })
    .await?;
    relay.kill().await?;
    let at_kill = relayed().await.unwrap();
    assert!(at_kill < total, "the relay was killed before it finished ({at_kill} of {total})");

    let relay = Service::start("command-service", &env, &[("APP_RELAY__ENABLED", "true".to_owned())]).await?;
    eventually(Duration::from_secs(60), "the outbox to drain", || async {
        (relayed().await? == total).then_some(())
    })
    .await?;

    // Every event is on the topic; only a few are there twice.
    let records = read_topic(&env.kafka, &env.kafka.events_topic).await?;
    let ids: Vec<&str> = records.iter().map(|r| r.header("ce_id").unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len() as i64, total, "every event reached the topic");
    assert!(ids.len() - unique.len() <= 2, "at most the unconfirmed in-flight rows were resent: {} duplicates", ids.len() - unique.len());
    let mut first_seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for r in &records {
        if seen.insert(r.header("ce_id").unwrap()) {
            first_seen.entry(r.header("ce_subject").unwrap()).or_default().push(r.header("ce_sequence").unwrap().parse()?);
        }
    }
    for (stream, sequences) in first_seen {
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{stream} is in order");
    }

    // The projector reads the duplicates and still gets the stock right.
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    for a in 0..ARTICLES {
        let url = format!("{}/articles/ART-{a}/stock", query.base_url);
        let stock: Value = eventually(Duration::from_secs(30), "the stock document", || async {
            let body: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            (body["version"] == json!(RECEIPTS + 2)).then_some(body)
        })
        .await?;
        assert_eq!(stock["on_hand"], json!(2 * RECEIPTS));
    }
    for service in [query, projector, relay, writer] {
        service.stop().await?;
    }
    Ok(())
}
