//! The analysts' tools against the real topic: an export folded into a fresh
//! model equals the live read models; the stock as of a moment agrees between
//! the CLI, the HTTP endpoint and an independent sum of the movements posted
//! by then, at the exact boundary too; time bounds and filters are exact;
//! bad arguments and an unreachable broker fail clearly; the Python example
//! reads the topic with a generic client.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use e2e::{Service, caught_up, post_history, run_binary};
use serde_json::{Value, json};
use testkit::TestEnv;

/// `erp-replay args` against the test's topic: (exit code, stdout, stderr).
async fn replay(env: &TestEnv, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let vars = [("APP_KAFKA__BROKERS", env.kafka.brokers.as_str()), ("APP_KAFKA__EVENTS_TOPIC", env.kafka.events_topic.as_str())];
    let out = run_binary("erp-replay", args, &vars).await?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits until every event of the event store is on the topic.
async fn relayed(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    testkit::eventually(Duration::from_secs(60), "the outbox to drain", || async {
        let pending: i64 = sqlx::query_scalar("select count(*) from outbox where relayed_at is null").fetch_one(pool).await.ok()?;
        (pending == 0).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_folded_into_a_fresh_model_equals_the_live_read_models() -> anyhow::Result<()> {
    let env = TestEnv::new(3).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 8).await?;
    caught_up(&pool).await?;
    relayed(&pool).await?;

    let file = std::env::temp_dir().join(format!("erp-export-{}.ndjson", env.id));
    let (code, _, stderr) = replay(&env, &["export", "--output", file.to_str().unwrap()]).await?;
    assert_eq!(code, 0, "{stderr}");
    let exported = lines(&std::fs::read_to_string(&file)?);
    let (stored,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&pool).await?;
    assert_eq!(exported.len() as i64, stored, "every event, once");
    // Per article, in stream order.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for e in &exported {
        let (stream, sequence) = (e["stream_id"].as_str().unwrap().to_owned(), e["sequence"].as_u64().unwrap());
        assert_eq!(sequence, last.get(&stream).copied().unwrap_or(0) + 1, "{stream} in order");
        last.insert(stream, sequence);
    }

    // Folded as of a moment after everything: the live stock of every article.
    let later = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let (code, out, stderr) = replay(&env, &["stock-as-of", "--at", &later, "--input", file.to_str().unwrap()]).await?;
    assert_eq!(code, 0, "{stderr}");
    let folded = lines(&out);
    assert_eq!(folded.len(), 8);
    let http = e2e::http();
    for article in &folded {
        let id = article["article"].as_str().unwrap();
        let live: Value = http.get(format!("{}/articles/{id}/stock", query.base_url)).send().await?.json().await?;
        assert_eq!(article["on_hand"], live["on_hand"], "{id}");
        let live_buckets: BTreeMap<(String, String), i64> = live["charges"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| {
                c["warehouses"].as_array().unwrap().iter().filter(|w| w["on_hand"] != 0).map(|w| {
                    ((c["charge"].as_str().unwrap().to_owned(), w["warehouse"].as_str().unwrap().to_owned()), w["on_hand"].as_i64().unwrap())
                })
            })
            .collect();
        let folded_buckets: BTreeMap<(String, String), i64> = article["charges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| ((c["charge"].as_str().unwrap().to_owned(), c["warehouse"].as_str().unwrap().to_owned()), c["on_hand"].as_i64().unwrap()))
            .collect();
        assert_eq!(folded_buckets, live_buckets, "{id}");
    }
    std::fs::remove_file(&file).ok();
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

/// Posts a receipt, issue or transfer with a posting time; returns the accepted event's data.
async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> anyhow::Result<()> {
    let r = http.post(format!("{base}{path}")).json(&body).send().await?;
    anyhow::ensure!(r.status().is_success(), "POST {path}: {} {}", r.status(), r.text().await?);
    Ok(())
}

/// On hand per (charge, warehouse) of `article` from movements posted at or
/// before `at`: the oracle, summed independently of the fold.
fn oracle(events: &[Value], article: &str, at: DateTime<Utc>) -> BTreeMap<(String, String), i64> {
    let mut stock: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in events {
        let d = &e["data"];
        if d["article"] != article {
            continue;
        }
        let posted: DateTime<Utc> = match d["posted_at"].as_str() {
            Some(t) => t.parse().unwrap(),
            None => continue,
        };
        if posted > at {
            continue;
        }
        let key = |w: &Value| (d["charge"].as_str().unwrap().to_owned(), w.as_str().unwrap().to_owned());
        let q = d["quantity"].as_i64().unwrap_or(0);
        match e["type"].as_str().unwrap() {
            "StockReceived" => *stock.entry(key(&d["warehouse"])).or_default() += q,
            "StockIssued" => *stock.entry(key(&d["warehouse"])).or_default() -= q,
            "StockTransferred" => {
                *stock.entry(key(&d["from"])).or_default() -= q;
                *stock.entry(key(&d["to"])).or_default() += q;
            }
            "InventoryCounted" => *stock.entry(key(&d["warehouse"])).or_default() += d["delta"].as_i64().unwrap(),
            _ => {}
        }
    }
    stock.retain(|_, n| *n != 0);
    stock
}

fn buckets(answer: &Value) -> BTreeMap<(String, String), i64> {
    answer["charges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ((c["charge"].as_str().unwrap().to_owned(), c["warehouse"].as_str().unwrap().to_owned()), c["on_hand"].as_i64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_as_of_a_moment_agrees_between_the_cli_the_http_endpoint_and_the_movements_posted_by_then() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let pool = env.pool().await?;
    let http = e2e::http();
    let base = command.base_url.clone();
    let now = Utc::now();
    let day = |d: i64| (now - chrono::Duration::days(d)).to_rfc3339();
    post(&http, &base, "/articles", json!({ "article": "ASOF", "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
    for c in ["L1", "L2"] {
        post(&http, &base, "/articles/ASOF/charges", json!({ "charge": c, "production_date": "2026-10-01" })).await?;
    }
    let movement = |c: &str, w: &str, n: i64, at: String| json!({ "article": "ASOF", "charge": c, "warehouse": w, "quantity": n, "posted_at": at });
    post(&http, &base, "/stock/receipts", movement("L1", "W1", 100, day(10))).await?;
    post(&http, &base, "/stock/receipts", movement("L2", "W2", 40, day(9))).await?;
    post(&http, &base, "/stock/issues", movement("L1", "W1", 30, day(6))).await?;
    post(&http, &base, "/stock/transfers", json!({ "article": "ASOF", "charge": "L1", "from": "W1", "to": "W2", "quantity": 20, "posted_at": day(4) })).await?;
    post(&http, &base, "/stock/inventory-counts", json!({ "article": "ASOF", "charge": "L2", "warehouse": "W2", "counted": 35, "posted_at": day(3) })).await?;
    // Recorded last, posted before the issue: backdated.
    post(&http, &base, "/stock/receipts", movement("L1", "W1", 7, day(8))).await?;
    caught_up(&pool).await?;
    relayed(&pool).await?;

    let (code, out, stderr) = replay(&env, &["export"]).await?;
    assert_eq!(code, 0, "{stderr}");
    let events = lines(&out);
    let posting_times: Vec<DateTime<Utc>> =
        events.iter().filter_map(|e| e["data"]["posted_at"].as_str()).map(|t| t.parse().unwrap()).collect();
    let micro = chrono::Duration::microseconds(1);
    let mut moments = vec![now - chrono::Duration::days(11), now + chrono::Duration::days(1)];
    for t in &posting_times {
        // Exactly at a posting time (it counts) and just before it (it does not).
        moments.extend([*t, *t - micro]);
    }
    for at in moments {
        let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let expected = oracle(&events, "ASOF", at);
        let (code, out, stderr) = replay(&env, &["stock-as-of", "--at", &at_text, "--article", "ASOF"]).await?;
        assert_eq!(code, 0, "{stderr}");
        let cli = lines(&out).remove(0);
        let url = format!("{}/articles/ASOF/stock/as-of", query.base_url);
        let answer = http.get(format!("{url}?at={at_text}")).send().await?;
        assert_eq!(answer.status(), 200);
        let served: Value = answer.json().await?;
        assert_eq!(buckets(&cli), expected, "CLI at {at_text}");
        assert_eq!(served, cli, "HTTP and CLI at {at_text}");
    }
    // As known before the backdated receipt was recorded: without it.
    let before_backdating = events.iter().rev().find(|e| e["type"] == "InventoryCounted").unwrap()["recorded_at"].as_str().unwrap().to_owned();
    let (_, out, _) = replay(&env, &["stock-as-of", "--at", &day(0), "--known-at", &before_backdating, "--article", "ASOF"]).await?;
    let known_then = lines(&out).remove(0);
    let (_, out, _) = replay(&env, &["stock-as-of", "--at", &day(0), "--article", "ASOF"]).await?;
    let known_now = lines(&out).remove(0);
    assert_eq!(known_now["on_hand"].as_i64().unwrap() - known_then["on_hand"].as_i64().unwrap(), 7);

    let r = http.get(format!("{}/articles/ASOF/stock/as-of?at=yesterday", query.base_url)).send().await?;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await?["field"], "at");
    let r = http.get(format!("{}/articles/NOPE/stock/as-of?at=2026-11-01", query.base_url)).send().await?;
    assert_eq!(r.status(), 404);
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn time_bounds_and_filters_of_an_export_are_exact_at_the_boundaries() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 3).await?;
    relayed(&pool).await?;
    let (_, out, _) = replay(&env, &["export"]).await?;
    let all = lines(&out);
    let times: Vec<String> = all.iter().map(|e| e["recorded_at"].as_str().unwrap().to_owned()).collect();
    let mut sorted: Vec<DateTime<Utc>> = times.iter().map(|t| t.parse().unwrap()).collect();
    sorted.sort();
    sorted.dedup();
    let (from, to) = (sorted[3], sorted[sorted.len() - 4]);
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let in_range = |lo: DateTime<Utc>, hi: DateTime<Utc>| {
        all.iter().filter(|e| {
            let t: DateTime<Utc> = e["recorded_at"].as_str().unwrap().parse().unwrap();
            t >= lo && t <= hi
        })
        .count()
    };
    let micro = chrono::Duration::microseconds(1);
    for (lo, hi) in [(from, to), (from + micro, to), (from, to - micro)] {
        let (code, out, stderr) = replay(&env, &["export", "--from-time", &fmt(lo), "--to-time", &fmt(hi)]).await?;
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(lines(&out).len(), in_range(lo, hi), "from {} to {}", fmt(lo), fmt(hi));
    }

    let count = |f: &dyn Fn(&Value) -> bool| all.iter().filter(|e| f(e)).count();
    let (_, out, _) = replay(&env, &["export", "--article", "ART-1", "--type", "StockReceived,StockTransferred"]).await?;
    let expected = count(&|e| e["stream_id"] == "article:ART-1" && ["StockReceived", "StockTransferred"].contains(&e["type"].as_str().unwrap()));
    assert!(expected >= 3);
    assert_eq!(lines(&out).len(), expected);
    let (_, out, _) = replay(&env, &["export", "--warehouse", "W2"]).await?;
    let in_w2 = |e: &Value| ["warehouse", "from", "to"].iter().any(|k| e["data"][*k] == "W2");
    assert_eq!(lines(&out).len(), count(&in_w2), "both sides of a transfer count");
    let (_, out, _) = replay(&env, &["export", "--charge", "L2", "--format", "csv"]).await?;
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].starts_with("partition,offset,event_id,stream,sequence,type"));
    assert_eq!(rows.len() - 1, count(&|e| e["data"]["charge"] == "L2"));

    // Offsets: [from, to) per partition.
    let p0: Vec<&Value> = all.iter().filter(|e| e["partition"] == 0).collect();
    let (a, b) = (p0[2]["offset"].as_i64().unwrap(), p0[5]["offset"].as_i64().unwrap());
    let (_, out, _) = replay(&env, &["export", "--from-offset", &format!("0:{a}"), "--to-offset", &format!("0:{b},1:0")]).await?;
    let got: Vec<i64> = lines(&out).iter().map(|e| e["offset"].as_i64().unwrap()).collect();
    assert_eq!(got, (a..b).collect::<Vec<_>>());
    command.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_an_unreachable_broker_and_an_unknown_topic_fail_clearly() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    for (args, code, says) in [
        (vec!["export", "--from-time", "yesterday"], 2, "RFC 3339"),
        (vec!["export", "--to-offset", "zero"], 2, "partition:offset"),
        (vec!["export", "--format", "xml"], 2, "ndjson"),
        (vec!["export", "--to-time", "2026-11-01", "--follow"], 2, "cannot be used with"),
        (vec!["stock-as-of"], 2, "--at"),
        (vec!["export", "--topic", "no-such-topic"], 1, "does not exist"),
    ] {
        let (got, _, stderr) = replay(&env, &args).await?;
        assert_eq!(got, code, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} says {says:?}: {stderr}");
    }
    let closed = format!("127.0.0.1:{}", testkit::free_port());
    let (got, _, stderr) = replay(&env, &["export", "--brokers", &closed]).await?;
    assert_eq!(got, 1);
    assert!(stderr.contains("cannot reach the broker"), "{stderr}");
    let (got, out, _) = replay(&env, &["export", "--help"]).await?;
    assert_eq!(got, 0);
    assert!(out.contains("--from-offset") && out.contains("--follow"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_reads_the_topic_with_a_generic_client() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 4).await?;
    caught_up(&pool).await?;
    relayed(&pool).await?;
    let python = std::env::var("ERP_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/read_events.py");
    let run = |extra: &'static [&'static str]| {
        let (python, env) = (python.clone(), env.clone());
        async move {
            let out = tokio::process::Command::new(&python)
                .arg(script)
                .args(["--brokers", &env.kafka.brokers, "--topic", &env.kafka.events_topic])
                .args(extra)
                .output()
                .await?;
            anyhow::ensure!(out.status.success(), "{python} {script}: {}", String::from_utf8_lossy(&out.stderr));
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let events = lines(&run(&[]).await?);
    let (stored,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&pool).await?;
    assert_eq!(events.len() as i64, stored);
    assert!(events.iter().all(|e| e["subject"].as_str().unwrap().starts_with("article:")));
    let http = e2e::http();
    for article in lines(&run(&["--stock"]).await?) {
        let id = article["article"].as_str().unwrap();
        let live: Value = http.get(format!("{}/articles/{id}/stock", query.base_url)).send().await?.json().await?;
        assert_eq!(article["on_hand"], live["on_hand"], "{id}");
    }
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}
