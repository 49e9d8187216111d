//! Command-service throughput against the raw INSERT commit rate.
//!
//! The command-service (release build) runs as its own process against a
//! fresh database on the same PostgreSQL and the test broker, once with its
//! outbox relay off (the write path alone: a command is accepted once its
//! events and outbox rows are committed) and once with it on (the relay and
//! the local broker then share the two cores with everything else). Clients
//! post receipts spread over `articles` articles over HTTP keep-alive; the
//! load generator is wrk, as for the query benchmark.
//!
//! The baseline: the same number of clients each committing single-row
//! INSERTs (autocommit) into a one-column table of the same database, each on
//! a connection of its own (as pgbench does: the raw commit rate).
//!
//! Two instances run on the same database: one with authentication off and
//! one that requires an API key (sent by every request, so each one is
//! checked against the cached key), to show what authentication costs.
//!
//! The machine is shared and noisy, so each line is measured in rounds that
//! alternate the instances and the baseline; the figures are the medians of
//! the rounds, and the ratios are the medians of the rounds' ratios.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;
use testkit::TestEnv;

use crate::drive;
use crate::stats::summarize;
use crate::wrk::{Load, Placement, median, median_load};

/// What one configuration of the service is measured with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) duration: Duration,
    pub(crate) articles: usize,
    pub(crate) rounds: usize,
}

pub(crate) async fn run(plan: Plan, levels: &[usize], relays: &[bool]) -> anyhow::Result<()> {
    println!(
        "\ncommand-service: POST /stock/receipts over {} articles (wrk), {} s per measurement, {} rounds alternating with the baseline",
        plan.articles,
        plan.duration.as_secs(),
        plan.rounds
    );
    println!("baseline: single-row INSERT ... commit (autocommit) on the same PostgreSQL, same clients, a connection each\n");
    println!("| relay | auth | clients | commands/s | p50 | p99 | INSERT commits/s | p50 | p99 | ratio (median of rounds) | API key / no auth |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &relay in relays {
        one_configuration(plan, levels, relay).await?;
    }
    Ok(())
}

/// Starts a command-service on `env`'s database; `relay` and `auth` on or off.
async fn command_service(env: &TestEnv, relay: bool, auth: bool) -> anyhow::Result<(tokio::process::Child, String)> {
    let port = testkit::free_port();
    let exe = std::env::current_exe()?.with_file_name("command-service");
    anyhow::ensure!(exe.exists(), "{} is missing: build with `cargo build --release -p command-service`", exe.display());
    let service = tokio::process::Command::new(&exe)
        .env("APP_HTTP__PORT", port.to_string())
        .env("APP_DATABASE__URL", &env.database.url)
        .env("APP_KAFKA__BROKERS", &env.kafka.brokers)
        .env("APP_KAFKA__EVENTS_TOPIC", &env.kafka.events_topic)
        .env("APP_LOG__FILTER", "warn")
        .env("APP_RELAY__ENABLED", relay.to_string())
        .env("APP_AUTH__ENABLED", auth.to_string())
        // The limiter is checked on every request, as in production, at a
        // rate no run reaches.
        .env("APP_AUTH__RATE_LIMITS", "writer=1000000,master-data=1000000")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    testkit::wait_ready(&base, Duration::from_secs(30)).await?;
    Ok((service, base))
}

async fn one_configuration(plan: Plan, levels: &[usize], relay: bool) -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    // The first instance migrates; the second starts on a migrated database.
    let (open_service, open) = command_service(&env, relay, false).await?;
    let (keyed_service, keyed) = command_service(&env, relay, true).await?;
    let pool = env.pool().await?;
    let roles = vec!["writer".into(), "master-data".into()];
    let new = platform::auth::keys::NewKey { name: "bench".into(), roles, warehouses: vec![], expires_at: None };
    let (key, _) = platform::auth::keys::create(&pool, &new).await?;

    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    eprintln!("relay {}: setting up {} articles per instance ...", on_off(relay), plan.articles);
    // Each instance writes articles of its own: an instance decides from the
    // states it holds in memory while it is the only writer of a stream, and
    // the other one writing the same streams would send it down the locking
    // path after every switch. Each registers its own, so that each starts
    // with them in memory.
    let instances = [("B", &open, None), ("K", &keyed, Some(&key))];
    for (article, base, key) in (0..plan.articles).flat_map(|a| instances.map(|(p, base, key)| (format!("{p}-{a}"), base, key))) {
        let post = |url: String| {
            let request = http.post(url);
            match key {
                Some(key) => request.bearer_auth(key),
                None => request,
            }
        };
        let r = post(format!("{base}/articles"))
            .json(&json!({ "article": article, "name": "bench", "category": "bench", "unit": {"code": "pcs"} }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "register: {}", r.status());
        let r = post(format!("{base}/articles/{article}/charges"))
            .json(&json!({ "charge": "L1", "production_date": "2026-11-01" }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "charge: {}", r.status());
    }
    sqlx::query("create table bench_baseline (id bigint generated always as identity primary key, v bigint not null)")
        .execute(&pool)
        .await?;

    let script = |prefix: &str, authorization: &str| {
        format!(
            "local i = 0\n\
             request = function()\n\
             \x20 i = i + 1\n\
             \x20 local body = '{{\"article\":\"{prefix}-' .. ((i * 7919) % {articles}) .. '\",\"charge\":\"L1\",\"warehouse\":\"WH\",\"quantity\":1}}'\n\
             \x20 return wrk.format(\"POST\", \"/stock/receipts\", {{[\"content-type\"] = \"application/json\"{authorization}}}, body)\n\
             end\n",
            articles = plan.articles
        )
    };
    let open_script = script("B", "");
    let keyed_script = script("K", &format!(", [\"authorization\"] = \"Bearer {key}\""));
    for &clients in levels {
        let (mut opens, mut keyeds, mut baselines) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..plan.rounds {
            eprintln!("relay {}, {clients} clients, round {} ...", on_off(relay), round + 1);
            let mut order = [(&open, &open_script, &mut opens), (&keyed, &keyed_script, &mut keyeds)];
            // Which goes first alternates: the second of a pair meets the
            // database the first one just wrote to.
            if round % 2 == 1 {
                order.reverse();
            }
            for (base, script, loads) in order {
                loads.push(crate::wrk::run(base, script, plan.duration.as_secs(), clients, Placement::Anywhere).await?);
                if relay {
                    // The relay's backlog would compete with what comes next: let it drain first.
                    drained(&pool).await?;
                }
            }
            baselines.push(baseline(&env.database.url, clients, plan.duration).await?);
        }
        let b = median_load(&baselines);
        let auth_ratios: Vec<f64> = keyeds.iter().zip(&opens).map(|(k, o)| k.per_second / o.per_second).collect();
        for (auth, services) in [("off", &opens), ("API key", &keyeds)] {
            let ratios: Vec<f64> = services.iter().zip(&baselines).map(|(s, b)| s.per_second / b.per_second).collect();
            let s = median_load(services);
            let versus_open = if auth == "off" { "".to_owned() } else { format!("{:.2}x ({})", median(auth_ratios.clone()), list(&auth_ratios)) };
            println!(
                "| {} | {auth} | {clients} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.2}x ({}) | {versus_open} |",
                on_off(relay),
                s.per_second,
                s.p50,
                s.p99,
                b.per_second,
                b.p50,
                b.p99,
                median(ratios.clone()),
                list(&ratios),
            );
        }
    }
    drop((open_service, keyed_service));
    Ok(())
}

fn list(ratios: &[f64]) -> String {
    ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
}

fn on_off(relay: bool) -> &'static str {
    if relay { "on" } else { "off" }
}

/// Waits until the outbox has no row left to relay.
async fn drained(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (pending,): (i64,) = sqlx::query_as("select count(*) from outbox where relayed_at is null").fetch_one(pool).await?;
        if pending == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the relay did not drain the outbox ({pending} rows left)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `clients` tasks, each on its own connection, committing single-row INSERTs.
async fn baseline(url: &str, clients: usize, duration: Duration) -> anyhow::Result<Load> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut c = sqlx::PgConnection::connect(url).await?;
        // Prepared once per connection, as the loop below reuses it.
        sqlx::query("insert into bench_baseline (v) values ($1)").bind(0i64).execute(&mut c).await?;
        connections.push(tokio::sync::Mutex::new(c));
    }
    let connections = Arc::new(connections);
    let start = Instant::now();
    let latencies = drive(clients, duration, move |client, i| {
        let connections = connections.clone();
        async move {
            let mut c = connections[client].lock().await;
            sqlx::query("insert into bench_baseline (v) values ($1)").bind(i as i64).execute(&mut *c).await?;
            Ok(())
        }
    })
    .await?;
    let s = summarize(latencies, start.elapsed());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Load { per_second: s.per_second, p50: ms(s.p50), p99: ms(s.p99), cpu_us: f64::NAN })
}
