//! `scripts/bench.sh webhooks`: how fast the notifier takes a preloaded
//! topic in (deliveries written) and delivers it to a receiver that answers
//! at once, against the baseline of bare HTTP POSTs of the same bodies to
//! the same receiver at the same concurrency from this process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use notifier::subscriptions::NewSubscription;
use testkit::TestEnv;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub events: usize,
    pub articles: usize,
    pub concurrency: usize,
    pub seconds: u64,
    pub skew: f64,
}

pub(crate) async fn run(plan: Plan) -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let pool = env.pool().await?;
    platform::db::MIGRATOR.run(&pool).await?;

    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Baseline: bare POSTs of a delivery-sized body, `concurrency` at a time.
    let body = Arc::new(vec![b'x'; 700]);
    let http = reqwest::Client::new();
    let latencies = crate::drive(plan.concurrency, Duration::from_secs(plan.seconds), {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        move |_, _| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                http.post(&url).body(body.to_vec()).send().await?.error_for_status()?;
                anyhow::Ok(())
            }
        }
    })
    .await?;
    let baseline = latencies.len() as f64 / plan.seconds as f64;
    received.store(0, Ordering::Relaxed);

    // The subscription first: it receives what is recorded after it.
    let new = NewSubscription {
        url: url.clone(),
        description: "bench".into(),
        event_types: vec!["*".into()],
        alerts: vec![],
        articles: vec![],
        categories: vec![],
        warehouses: vec![],
        expiring_within_days: None,
    };
    notifier::subscriptions::create(&pool, &new, "bench").await?;
    let history = crate::projector::history(plan.articles, (plan.events / plan.articles).max(1), plan.skew);
    let total = history.len() as u64;
    crate::projector::preload(&env, &history).await?;

    let exe = std::env::current_exe()?.with_file_name("notifier");
    anyhow::ensure!(exe.exists(), "{} is missing: build with `cargo build --release -p notifier`", exe.display());
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&exe)
        .env("APP_HTTP__PORT", testkit::free_port().to_string())
        .env("APP_DATABASE__URL", &env.database.url)
        .env("APP_KAFKA__BROKERS", &env.kafka.brokers)
        .env("APP_KAFKA__EVENTS_TOPIC", &env.kafka.events_topic)
        .env("APP_NOTIFY__GROUP_ID", &env.group_id)
        .env("APP_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true")
        .env("APP_WEBHOOKS__CONCURRENCY", plan.concurrency.to_string())
        .env("APP_LOG__FILTER", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let (mut written_at, mut delivered_at) = (None, None);
    while delivered_at.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the notifier exited with {status}");
        }
        if written_at.is_none() {
            let (written,): (i64,) = sqlx::query_as("select count(*) from webhook_deliveries").fetch_one(&pool).await?;
            if written as u64 >= total {
                written_at = Some(started.elapsed());
            }
        }
        if received.load(Ordering::Relaxed) >= total {
            delivered_at = Some(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(3600), "not delivered within an hour");
    }
    let written_at = written_at.unwrap_or_else(|| delivered_at.unwrap());
    let delivered_at = delivered_at.unwrap();
    let (attempts,): (i64,) = sqlx::query_as("select count(*) from webhook_attempts").fetch_one(&pool).await?;
    child.kill().await?;

    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "webhooks: {total} events over {} articles (skew {}), {} deliveries in flight at most",
        plan.articles, plan.skew, plan.concurrency
    );
    println!("  baseline  bare POSTs to the same receiver         {baseline:>9.0} /s");
    println!("  intake    deliveries written (from the topic)      {:>9.0} /s  ({:.1} s)", rate(written_at), written_at.as_secs_f64());
    println!(
        "  delivery  signed, attempt recorded, end to end      {:>9.0} /s  ({:.1} s)  = {:.2}x the baseline",
        rate(delivered_at),
        delivered_at.as_secs_f64(),
        rate(delivered_at) / baseline
    );
    println!("  attempts recorded: {attempts} (one per delivery: none repeated)");
    Ok(())
}
