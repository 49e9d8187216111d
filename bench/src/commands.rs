//! Command-service throughput against the raw INSERT commit rate.
//!
//! The command-service (release build) runs as its own process with its relay
//! on, against a fresh database on the same PostgreSQL and the test broker.
//! Each client posts receipts, spread over `articles` articles, over HTTP
//! keep-alive. The baseline: the same number of clients each committing
//! single-row INSERTs (autocommit) into a one-column table of the same
//! database, through a pool of the same size as the service's.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::TestEnv;

use crate::stats::{Summary, ms, summarize};
use crate::drive;

pub(crate) async fn run(duration: Duration, levels: &[usize], articles: usize, relay: bool) -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let port = testkit::free_port();
    let exe = std::env::current_exe()?.with_file_name("command-service");
    anyhow::ensure!(exe.exists(), "{} is missing: build with `cargo build --release -p command-service`", exe.display());
    let max_connections = 32;
    let mut service = tokio::process::Command::new(&exe)
        .env("APP_HTTP__PORT", port.to_string())
        .env("APP_DATABASE__URL", &env.database.url)
        .env("APP_DATABASE__MAX_CONNECTIONS", max_connections.to_string())
        .env("APP_KAFKA__BROKERS", &env.kafka.brokers)
        .env("APP_KAFKA__EVENTS_TOPIC", &env.kafka.events_topic)
        .env("APP_LOG__FILTER", "warn")
        .env("APP_RELAY__ENABLED", relay.to_string())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    testkit::wait_ready(&base, Duration::from_secs(30)).await?;

    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    eprintln!("setting up {articles} articles ...");
    for a in 0..articles {
        let article = format!("B-{a}");
        let r = http.post(format!("{base}/articles")).json(&json!({
            "article": article, "name": "bench", "category": "bench", "unit": {"code": "pcs"}
        })).send().await?;
        anyhow::ensure!(r.status() == 201, "register: {}", r.status());
        let r = http.post(format!("{base}/articles/{article}/charges")).json(&json!({
            "charge": "L1", "production_date": "2026-11-01"
        })).send().await?;
        anyhow::ensure!(r.status() == 201, "charge: {}", r.status());
    }

    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(max_connections).connect(&env.database.url).await?;
    sqlx::query("create table bench_baseline (id bigint generated always as identity primary key, v bigint not null)")
        .execute(&pool)
        .await?;

    let relay_state = if relay { "on" } else { "off" };
    println!("\ncommand-service: POST /stock/receipts over {articles} articles, {}s per line, relay {relay_state}", duration.as_secs());
    println!("baseline: single-row INSERT ... commit (autocommit) on the same PostgreSQL, same clients\n");
    println!("| clients | commands/s | p50 | p99 | INSERT commits/s | p50 | p99 | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &clients in levels {
        let url = Arc::new(format!("{base}/stock/receipts"));
        let http2 = http.clone();
        let start = Instant::now();
        let latencies = drive(clients, duration, move |client, i| {
            let (http, url) = (http2.clone(), url.clone());
            async move {
                let article = format!("B-{}", (client as u64 * 7919 + i * 104_729) % articles as u64);
                let r = http.post(url.as_str()).json(&json!({
                    "article": article, "charge": "L1", "warehouse": "WH", "quantity": 1
                })).send().await?;
                anyhow::ensure!(r.status() == 201, "receipt: {}", r.status());
                Ok(())
            }
        })
        .await?;
        let service_stats = summarize(latencies, start.elapsed());

        let pool2 = pool.clone();
        let start = Instant::now();
        let latencies = drive(clients, duration, move |_, i| {
            let pool = pool2.clone();
            async move {
                sqlx::query("insert into bench_baseline (v) values ($1)").bind(i as i64).execute(&pool).await?;
                Ok(())
            }
        })
        .await?;
        let baseline = summarize(latencies, start.elapsed());
        print_line(clients, service_stats, baseline);
    }
    service.kill().await?;
    Ok(())
}

fn print_line(clients: usize, s: Summary, b: Summary) {
    println!(
        "| {clients} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2}x |",
        s.per_second,
        ms(s.p50),
        ms(s.p99),
        b.per_second,
        ms(b.p50),
        ms(b.p99),
        s.per_second / b.per_second
    );
}
