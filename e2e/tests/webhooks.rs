//! Webhooks end to end: commands over HTTP, the outbox relay, the topic, a
//! `notifier` process, and receivers run by the test. Deliveries arrive
//! signed and verify with the Standard Webhooks reference package (the
//! receiver of docs/examples); a 500 is retried on the schedule, a timeout
//! too, a 429 waits its `Retry-After`, a 410 disables the endpoint; the
//! reorder alert fires exactly when the point is crossed; a job's end is
//! announced; a notifier killed with SIGKILL under load loses nothing and
//! writes no delivery twice, and new work flows after its restart; private
//! addresses are refused unless allowed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use e2e::Service;
use serde_json::{Value, json};
use testkit::{TestEnv, eventually};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    id: String,
    signature: String,
    traceparent: String,
    body: Value,
    at: Instant,
}

/// Receivers on one port; what each path answers is in [`answer`].
#[derive(Debug, Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start() -> anyhow::Result<(Self, String)> {
        let receiver = Self::default();
        let app = axum::Router::new().route("/{path}", axum::routing::post(answer)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((receiver, base))
    }

    fn at(&self, path: &str) -> Vec<Got> {
        self.got.lock().unwrap().iter().filter(|g| g.path == path).cloned().collect()
    }
}

/// `/ok` 200; `/flaky` 500 the first time it sees a message, then 200;
/// `/slow` answers the first time only after 5 s (past the timeout);
/// `/limited` 429 with `Retry-After: 3` the first time; `/gone` 410.
async fn answer(State(r): State<Receiver>, Path(path): Path<String>, headers: HeaderMap, body: String) -> axum::response::Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let got = Got {
        path: path.clone(),
        id: header("webhook-id"),
        signature: header("webhook-signature"),
        traceparent: header("traceparent"),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    let first = {
        let mut all = r.got.lock().unwrap();
        let first = !all.iter().any(|g| g.path == got.path && g.id == got.id);
        all.push(got);
        first
    };
    match (path.as_str(), first) {
        ("flaky", true) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        ("slow", true) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        ("limited", true) => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3")]).into_response(),
        ("gone", _) => StatusCode::GONE.into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

/// A notifier that notices everything quickly: 2 s timeout, retries after 1 s.
fn quick_notifier() -> Vec<(&'static str, String)> {
    vec![
        ("APP_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true".into()),
        ("APP_WEBHOOKS__TIMEOUT_MS", "2000".into()),
        ("APP_WEBHOOKS__RETRY_SCHEDULE_SECS", "1,1,1".into()),
        ("APP_WEBHOOKS__POLL_MS", "200".into()),
        ("APP_NOTIFY__POLL_MS", "200".into()),
    ]
}

fn allow_private() -> Vec<(&'static str, String)> {
    vec![("APP_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true".into())]
}

/// Makes a subscription; returns its id and secret.
async fn subscribe(base: &str, body: Value) -> anyhow::Result<(String, String)> {
    let r = e2e::http().post(format!("{base}/webhooks")).json(&body).send().await?;
    anyhow::ensure!(r.status() == 201, "subscribing: {} {}", r.status(), r.text().await?);
    let created: Value = r.json().await?;
    Ok((created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned()))
}

async fn post(base: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let r = e2e::http().post(format!("{base}{path}")).json(&body).send().await?;
    anyhow::ensure!(r.status() == 201, "{path}: {} {}", r.status(), r.text().await?);
    Ok(r.json().await?)
}

async fn log(base: &str, subscription: &str) -> anyhow::Result<Vec<Value>> {
    Ok(e2e::http().get(format!("{base}/webhooks/{subscription}/deliveries?limit=500")).send().await?.json().await?)
}

/// The CloudEvents types a receiver got, in order, without repeats.
fn types(got: &[Got]) -> Vec<String> {
    let mut seen = HashSet::new();
    got.iter().filter(|g| seen.insert(g.id.clone())).map(|g| g.body["type"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_arrive_signed_retry_on_schedule_and_a_410_disables_the_endpoint() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let writer = Service::start("command-service", &env, &allow_private()).await?;
    let mut notify = quick_notifier();
    notify.push(("APP_NOTIFY__EXPIRY_PERIOD_SECS", "2".into()));
    let _notifier = Service::start("notifier", &env, &notify).await?;
    let (receiver, hooks) = Receiver::start().await?;
    let base = &writer.base_url;

    // The reference receiver of the docs verifies signatures with the standardwebhooks package.
    let python = std::env::var("ERP_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let example_port = testkit::free_port();
    let (reference, secret) = subscribe(base, json!({"url": format!("http://127.0.0.1:{example_port}/"), "event_types": ["*"], "alerts": ["below_reorder_point", "above_reorder_point", "charge_blocked"]})).await?;
    let script = format!("{}/../docs/examples/webhook_receiver.py", env!("CARGO_MANIFEST_DIR"));
    let mut example = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(example_port.to_string())
        .env("WEBHOOK_SECRET", &secret)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;

    let all = json!(["below_reorder_point", "above_reorder_point", "charge_blocked", "charge_released", "quality_rejected"]);
    let (ok, _) = subscribe(base, json!({"url": format!("{hooks}/ok"), "event_types": ["*"], "alerts": all})).await?;
    let (flaky, _) = subscribe(base, json!({"url": format!("{hooks}/flaky"), "event_types": ["StockReceived"]})).await?;
    let (slow, _) = subscribe(base, json!({"url": format!("{hooks}/slow"), "event_types": ["StockIssued"]})).await?;
    subscribe(base, json!({"url": format!("{hooks}/limited"), "event_types": ["ChargeBlocked"]})).await?;
    let (gone, _) = subscribe(base, json!({"url": format!("{hooks}/gone"), "event_types": ["*"]})).await?;
    subscribe(base, json!({"url": format!("{hooks}/other"), "event_types": ["*"], "alerts": all, "articles": ["HOOK-2"]})).await?;
    subscribe(base, json!({"url": format!("{hooks}/expiring"), "alerts": ["charge_expiring"], "expiring_within_days": 5})).await?;

    let soon = (chrono::Utc::now() + chrono::Duration::days(3)).date_naive().to_string();
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).date_naive().to_string();
    post(base, "/articles", json!({"article": "HOOK-1", "name": "Hook", "category": "bolts", "unit": {"code": "pcs"}, "reorder_point": 10})).await?;
    post(base, "/articles/HOOK-1/charges", json!({"charge": "L1", "production_date": "2026-11-01", "expiry_date": soon})).await?;
    post(base, "/articles/HOOK-1/charges", json!({"charge": "L2", "production_date": "2026-11-01", "expiry_date": later})).await?;
    let steps = [
        ("/stock/receipts", 20), // 20: rises above (it started below: no stock)
        ("/stock/issues", 5),    // 15
        ("/stock/issues", 6),    // 9: below
        ("/stock/issues", 1),    // 8: still below, no alert
        ("/stock/receipts", 4),  // 12: above
    ];
    for (path, quantity) in steps {
        post(base, path, json!({"article": "HOOK-1", "charge": "L1", "warehouse": "WH-1", "quantity": quantity})).await?;
    }
    // A client's trace: the receipt carries it to the topic and to the receiver.
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = e2e::http()
        .post(format!("{base}/stock/receipts"))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"article": "HOOK-1", "charge": "L2", "warehouse": "WH-1", "quantity": 2}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let traced_event = r.json::<Value>().await?["event_ids"][0].as_str().unwrap().to_owned();
    post(base, "/stock/receipts", json!({"article": "HOOK-1", "charge": "L2", "warehouse": "WH-1", "quantity": 1})).await?;
    post(base, "/articles/HOOK-1/charges/L1/block", json!({"reason": "moisture"})).await?;
    let (events,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&env.pool().await?).await?;

    // Everything, once each, in the order of the stream.
    let got = eventually(Duration::from_secs(60), "every message at /ok", || async {
        let got = receiver.at("ok");
        (types(&got).len() == events as usize + 5).then_some(got)
    })
    .await?;
    let kinds = types(&got);
    let alerts: Vec<&str> = kinds.iter().filter_map(|t| t.strip_prefix("erp.stock.alert.")).collect();
    assert_eq!(alerts, ["below_reorder_point", "above_reorder_point", "below_reorder_point", "above_reorder_point", "charge_blocked"], "{kinds:?}");
    let mut seen = HashSet::new();
    let sequences: Vec<u64> = got
        .iter()
        .filter(|g| g.body["source"] == "urn:erp-stock:command-service" && seen.insert(g.id.clone()))
        .map(|g| g.body["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=events as u64).collect::<Vec<_>>(), "one article's events arrive in order, once");
    let below = got.iter().find(|g| g.body["type"] == "erp.stock.alert.below_reorder_point").unwrap();
    assert_eq!(below.body["data"]["available"], 0, "a new article has no stock: below at once");
    assert!(got.iter().all(|g| g.signature.starts_with("v1,")));

    // Traces: the command-service's span is a child of the caller's, the
    // record carries it (ce_traceparent), the delivery is a child of that.
    let record = testkit::read_topic(&env.kafka, &env.kafka.events_topic).await?.into_iter().find(|r| r.header("ce_id") == Some(traced_event.as_str())).unwrap();
    let on_topic = record.header("ce_traceparent").unwrap().to_owned();
    let parts = |tp: &str| tp.split('-').map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(parts(&on_topic)[1], trace, "{on_topic}");
    assert_ne!(parts(&on_topic)[2], caller, "the command-service's own span");
    let delivered = got.iter().find(|g| g.id == traced_event).unwrap();
    assert_eq!(delivered.body["traceparent"], on_topic.as_str(), "the CloudEvent carries the trace attribute");
    assert_eq!(parts(&delivered.traceparent)[1], trace, "the delivery continues the trace");
    assert_ne!(parts(&delivered.traceparent)[2], parts(&on_topic)[2], "as a span of its own");
    // Without a traceparent the command starts a trace of its own.
    let untraced = got.iter().find(|g| g.body["type"] == "erp.stock.StockIssued").unwrap();
    assert_eq!(untraced.traceparent.len(), 55, "{}", untraced.traceparent);
    assert_ne!(parts(&untraced.traceparent)[1], trace);
    assert!(receiver.at("other").is_empty(), "a filter on another article lets nothing through");

    // The reference receiver verified every signature and saw the same messages.
    let verified = eventually(Duration::from_secs(30), "the reference receiver to verify everything", || async {
        let log = log(base, &reference).await.ok()?;
        (log.len() == events as usize + 5 && log.iter().all(|d| d["state"] == "delivered")).then_some(log)
    })
    .await?;
    for d in &verified {
        // A bad signature is a 400; a slow moment of the machine may add a timed-out attempt.
        let statuses: Vec<&Value> = d["attempt_log"].as_array().unwrap().iter().map(|a| &a["status"]).collect();
        assert!(statuses.iter().all(|s| s.is_null() || **s == 204), "{d}");
        assert_eq!(d["last_status"], 204, "{d}");
    }
    example.start_kill()?;
    let out = example.wait_with_output().await?;
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), events as usize + 5, "the reference receiver printed each message once");

    // 500, then delivered on the next attempt a second later, with the same webhook-id.
    let flaky_log = eventually(Duration::from_secs(30), "the flaky endpoint's deliveries", || async {
        let log = log(base, &flaky).await.ok()?;
        (log.len() == 4 && log.iter().all(|d| d["state"] == "delivered")).then_some(log)
    })
    .await?;
    for d in &flaky_log {
        let attempts = d["attempt_log"].as_array().unwrap();
        assert_eq!((attempts[0]["status"].as_i64(), d["last_status"].as_i64()), (Some(500), Some(200)), "{d}");
    }
    let flaky_got = receiver.at("flaky");
    let ids: HashSet<String> = flaky_got.iter().map(|g| g.id.clone()).collect();
    assert_eq!(ids.len(), 4, "one webhook-id per receipt, the same on the retry");
    for id in ids {
        let times: Vec<Instant> = flaky_got.iter().filter(|g| g.id == id).map(|g| g.at).collect();
        assert!(times.len() >= 2 && times[1] - times[0] >= Duration::from_millis(900), "retried after the 1 s of the schedule");
    }

    // A timeout is a failed attempt, retried.
    let slow_log = eventually(Duration::from_secs(30), "the slow endpoint's deliveries", || async {
        let log = log(base, &slow).await.ok()?;
        (log.len() == 3 && log.iter().all(|d| d["state"] == "delivered")).then_some(log)
    })
    .await?;
    for d in &slow_log {
        assert!(d["attempt_log"][0]["error"].as_str().unwrap().contains("timed out"), "{d}");
        assert_eq!(d["last_status"], 200, "{d}");
    }

    // 429 with Retry-After: 3 waits 3 s, not the schedule's 1 s.
    let limited_got = eventually(Duration::from_secs(30), "the rate-limited endpoint's retry", || async {
        let got = receiver.at("limited");
        (got.len() >= 2).then_some(got)
    })
    .await?;
    assert!(limited_got[1].at - limited_got[0].at >= Duration::from_millis(2900), "Retry-After honoured");

    // 410: disabled at the first answer, nothing more sent.
    let disabled = eventually(Duration::from_secs(30), "the gone endpoint to be disabled", || async {
        let s: Value = e2e::http().get(format!("{base}/webhooks/{gone}")).send().await.ok()?.json().await.ok()?;
        (s["enabled"] == false).then_some(s)
    })
    .await?;
    assert!(disabled["disabled_reason"].as_str().unwrap().contains("410"), "{disabled}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.at("gone").len(), 1, "nothing is sent to a disabled endpoint");
    let listed: Vec<Value> = e2e::http().get(format!("{base}/webhooks?enabled=false")).send().await?.json().await?;
    assert_eq!(listed.iter().map(|s| s["id"].as_str().unwrap()).collect::<Vec<_>>(), [gone.as_str()]);

    // A manual re-send goes out again with the same webhook-id.
    let first = log(base, &ok).await?.last().cloned().unwrap();
    let r = e2e::http().post(format!("{base}/webhooks/{ok}/deliveries/{}/resend", first["id"])).send().await?;
    assert_eq!(r.status(), 202);
    eventually(Duration::from_secs(20), "the re-sent message", || async {
        (receiver.at("ok").iter().filter(|g| g.id == first["message_id"].as_str().unwrap()).count() == 2).then_some(())
    })
    .await?;

    // The expiry check: L1 (3 days, with stock) within 5 days; L2 (30 days) not.
    let expiring_got = eventually(Duration::from_secs(30), "a charge_expiring alert", || async {
        let got = receiver.at("expiring");
        (!got.is_empty()).then_some(got)
    })
    .await?;
    let data = &expiring_got[0].body["data"];
    assert_eq!((data["charge"].as_str(), data["days_left"].as_i64()), (Some("L1"), Some(3)), "{data}");
    assert!(expiring_got.iter().all(|g| g.body["data"]["charge"] == "L1"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notifier_killed_under_load_loses_nothing_writes_nothing_twice_and_delivers_new_work() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let writer = Service::start("command-service", &env, &allow_private()).await?;
    let mut notifier = Service::start("notifier", &env, &quick_notifier()).await?;
    let (receiver, hooks) = Receiver::start().await?;
    let pool = env.pool().await?;
    let (subscription, _) = subscribe(&writer.base_url, json!({"url": format!("{hooks}/ok"), "event_types": ["*"]})).await?;
    let (articles, _) = e2e::load::seed(&writer.base_url, 4).await?;
    let load = e2e::load::Load::start(&writer.base_url, None, &articles, 4, 0);

    eventually(Duration::from_secs(60), "deliveries under load", || async { (receiver.at("ok").len() > 200).then_some(()) }).await?;
    notifier.crash().await?;
    let (killed_at, killed_wall) = (Instant::now(), chrono::Utc::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    notifier.restart().await?;
    eventually(Duration::from_secs(60), "new commands after the restart", || async { (load.accepted_after(killed_at) > 100).then_some(()) }).await?;
    let ledger = load.stop().await;
    assert!(ledger.failures.is_empty(), "{:?}", ledger.failures);
    e2e::check::relayed(&pool).await?;

    let events: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> = sqlx::query_as("select event_id, recorded_at from events").fetch_all(&pool).await?;
    let expected: HashSet<String> = events.iter().map(|(id, _)| id.to_string()).collect();
    eventually(Duration::from_secs(120), "every event delivered", || async {
        let got: HashSet<String> = receiver.at("ok").into_iter().map(|g| g.id).collect();
        (got == expected).then_some(())
    })
    .await?;
    // One delivery record per event: the intake's transaction wrote none twice and lost none.
    let (rows, distinct, delivered): (i64, i64, i64) = sqlx::query_as(
        "select count(*), count(distinct message_id), count(*) filter (where state = 'delivered') from webhook_deliveries where subscription_id = $1::uuid",
    )
    .bind(&subscription)
    .fetch_one(&pool)
    .await?;
    assert_eq!((rows, distinct, delivered), (events.len() as i64, events.len() as i64, events.len() as i64));
    // Duplicates at the receiver are only re-sends of a message whose answer
    // was lost with the process (same webhook-id), and few.
    let got = receiver.at("ok");
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for g in &got {
        *per_id.entry(g.id.as_str()).or_default() += 1;
    }
    let twice = per_id.values().filter(|n| **n > 1).count();
    assert!(twice <= 32, "at most the deliveries in flight when it died are sent again: {twice}");
    // Per article, in order: each receiver-side first arrival follows the stream's sequence.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = HashSet::new();
    for g in got.iter().filter(|g| seen.insert(g.id.clone())) {
        let subject = g.body["subject"].as_str().unwrap().to_owned();
        let sequence = g.body["sequence"].as_u64().unwrap();
        let before = last.insert(subject.clone(), sequence).unwrap_or(0);
        assert!(sequence > before, "{subject}: {sequence} arrived after {before}");
    }
    // New work flowed after the restart: events recorded after the kill were delivered too.
    let after = events.iter().filter(|(_, at)| *at > killed_wall).count();
    assert!(after > 100, "{after} events after the restart");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn private_addresses_are_refused_unless_allowed_and_a_jobs_end_is_announced() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let strict = Service::start("command-service", &env, &[]).await?;
    for url in ["http://127.0.0.1:9/x", "http://localhost/x", "http://169.254.169.254/latest", "http://[::1]/", "ftp://example.com/"] {
        let r = e2e::http().post(format!("{}/webhooks", strict.base_url)).json(&json!({"url": url, "event_types": ["*"]})).send().await?;
        assert_eq!(r.status(), 422, "{url}");
        let problem: Value = r.json().await?;
        assert_eq!(problem["field"], "url", "{url}: {problem}");
    }
    let r = e2e::http().post(format!("{}/webhooks", strict.base_url)).json(&json!({"url": "https://hooks.example.com/x", "event_types": ["StockStolen"]})).send().await?;
    let problem: Value = r.json().await?;
    assert_eq!(problem["field"], "event_types", "{problem}");
    let (n,): (i64,) = sqlx::query_as("select count(*) from webhook_subscriptions").fetch_one(&env.pool().await?).await?;
    assert_eq!(n, 0, "nothing written");

    // Allowed by the API but not by the notifier: a name resolving to
    // loopback is refused when connecting.
    let lenient = Service::start("command-service", &env, &allow_private()).await?;
    let (receiver, hooks) = Receiver::start().await?;
    let port = hooks.rsplit(':').next().unwrap();
    let mut strict_notifier: Vec<(&str, String)> = quick_notifier().into_iter().filter(|(k, _)| !k.contains("ALLOW_PRIVATE")).collect();
    strict_notifier.push(("APP_WEBHOOKS__RETRY_SCHEDULE_SECS", "".into()));
    let _notifier = Service::start("notifier", &env, &strict_notifier).await?;
    let (refused, _) = subscribe(&lenient.base_url, json!({"url": format!("http://localhost:{port}/ok"), "alerts": ["job_finished"]})).await?;

    let _worker = Service::start("worker", &env, &[("APP_JOBS__POLL_MS", "200".into())]).await?;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = e2e::http()
        .post(format!("{}/jobs/selftest", lenient.base_url))
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .json(&json!({"steps": 2}))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await?;
    assert!(job["traceparent"].as_str().unwrap().contains(trace), "the job continues the request's trace: {job}");
    let log = eventually(Duration::from_secs(60), "the job_finished delivery to fail", || async {
        let log = log(&lenient.base_url, &refused).await.ok()?;
        (log.first()?["state"] == "failed").then_some(log)
    })
    .await?;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["event_type"], "job_finished");
    let error = log[0]["attempt_log"][0]["error"].as_str().unwrap();
    assert!(error.contains("internal address"), "{error}");
    assert!(receiver.at("ok").is_empty(), "nothing reached the loopback receiver");
    let (traced,): (String,) = sqlx::query_as("select traceparent from webhook_deliveries").fetch_one(&env.pool().await?).await?;
    assert!(traced.contains(trace), "the job's end is announced in the job's trace: {traced}");
    Ok(())
}
