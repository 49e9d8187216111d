//! Query-service throughput per tier, against a bare axum handler returning
//! the same bytes, and against computing stock per request the way the
//! planning documents did (a SUM over the movements).
//!
//! Data: a generated history (1M events by default) applied with the
//! projector's own code into a fresh database, its documents copied into
//! Redis. Every line is measured with the same load tool, wrk, over HTTP
//! keep-alive, on the stock of a fixed set of articles, each request picking
//! the next article. The two cores are split deliberately: the server under
//! test runs pinned to core 0 with one tokio worker thread, wrk pinned to
//! core 1 with one thread; PostgreSQL and Redis (system services) are not
//! pinned and use whatever is free.
//!
//! Bare, memory and SUM are measured in alternating rounds (the median round
//! of each is reported, with the per-round ratios: the machine's noise then
//! falls on all three alike); the memory tier and the SUM are also measured
//! one request at a time (one connection), where the latency of a request is
//! what its work costs rather than its queueing. Before measuring, the
//! database is vacuumed and checkpointed, as in steady state.
//!
//! Lines:
//! - bare: an axum handler returning the stored bytes of one document, no layers;
//! - memory: the query-service with every tier, warmed (in-process hits);
//! - redis: the query-service with `APP_CACHE__TIERS=redis,postgres`;
//! - postgres: the query-service with `APP_CACHE__TIERS=postgres`;
//! - sum: an axum handler computing the same figures per request with a
//!   `SUM ... GROUP BY` over the movements table (indexed by article).

use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use readmodel::Generation;
use projector::record::Incoming;
use projector::apply::apply_batch;
use projector::batch::Mode;
use projector::cache::StateCache;
use readmodel::Statements;
use sqlx::PgPool;
use testkit::TestEnv;
use testkit::events::cloudevent;

use crate::projector::history;
use crate::wrk::{Load, Placement, median, median_load};

/// Serves `GET /articles/{article}/stock` with the same bytes for every article.
pub(crate) async fn serve_bare(port: u16, body: Vec<u8>) -> anyhow::Result<()> {
    let body = axum::body::Bytes::from(body);
    let app = Router::new().route(
        "/articles/{article}/stock",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Serves `GET /articles/{article}/stock` computed per request from the movements.
pub(crate) async fn serve_sum(port: u16, database_url: String) -> anyhow::Result<()> {
    // The services' own pool settings (no ping per query), so the comparison is of the queries.
    let settings = platform::db::DatabaseSettings { url: database_url, max_connections: 8, ..Default::default() };
    let pool = platform::db::pool(&settings)?;
    async fn stock(State(pool): State<PgPool>, Path(article): Path<String>) -> axum::response::Response {
        let rows: Result<Vec<(String, String, i64)>, _> = sqlx::query_as(
            "select charge, warehouse, sum(delta)::int8 from rm_1.movements where article_id = $1
             group by charge, warehouse order by charge, warehouse",
        )
        .bind(&article)
        .fetch_all(&pool)
        .await;
        match rows {
            Ok(rows) => {
                let on_hand: i64 = rows.iter().map(|r| r.2).sum();
                let charges: Vec<_> = rows
                    .iter()
                    .map(|(c, w, n)| serde_json::json!({ "charge": c, "warehouse": w, "on_hand": n }))
                    .collect();
                axum::Json(serde_json::json!({ "article": article, "on_hand": on_hand, "charges": charges })).into_response()
            }
            Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
    let app = Router::new().route("/articles/{article}/stock", get(stock)).with_state(pool);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Applies the history with the projector's code and copies the documents into Redis.
async fn load(env: &TestEnv, events: usize, articles: usize) -> anyhow::Result<()> {
    let pool = env.pool().await?;
    platform::db::MIGRATOR.run(&pool).await?;
    let envelopes = history(articles, (events / articles).max(4), 1.0);
    let sql = Statements::new(Generation::new(1));
    let mut cache = StateCache::default();
    for (i, chunk) in envelopes.chunks(10_000).enumerate() {
        let batch: Vec<Incoming> = chunk
            .iter()
            .enumerate()
            .map(|(j, e)| {
                let (key, headers, value) = cloudevent(e);
                Incoming::new(0, (i * 10_000 + j) as i64, None, Some(key), headers, value)
            })
            .collect();
        let mut tx = pool.begin().await?;
        let mut outcome = apply_batch(&mut tx, &sql, "bench", &batch, &mut cache, &Mode::Live).await?;
        tx.commit().await?;
        cache.keep(std::mem::take(&mut outcome.states), &outcome.halted);
    }
    let (movements,): (i64,) = sqlx::query_as("select count(*) from rm_1.movements").fetch_one(&pool).await?;
    // Settle the database as in steady state: the load leaves a million
    // rows without hint bits or visibility map (the first reads would write
    // them) and autovacuum and a checkpoint due, which would otherwise land
    // in whichever line runs first.
    sqlx::query("vacuum (analyze)").execute(&pool).await?;
    if let Err(e) = sqlx::query("checkpoint").execute(&pool).await {
        eprintln!("no checkpoint before measuring ({e})");
    }
    let sink = projector::sink::RedisSink::new(env.redis.clone())?;
    projector::sink::repair(&pool, &sink, &Generation::new(1), Duration::ZERO).await?;
    eprintln!("loaded {} events ({movements} movements) over {articles} articles", envelopes.len());
    Ok(())
}

/// Starts `program args` pinned to core 0 with one tokio worker.
fn spawn_pinned(program: &std::path::Path, args: &[String], env: &[(&str, String)]) -> anyhow::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new("taskset");
    command.arg("-c").arg("0").arg(program).args(args).env("TOKIO_WORKER_THREADS", "1").env("APP_LOG__FILTER", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    Ok(command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn()?)
}

/// Runs wrk pinned to core 1 against `base` for `seconds`, cycling over
/// the articles; with `key`, every request carries it.
async fn wrk(base: &str, articles: usize, hot: usize, seconds: u64, connections: usize, key: Option<&str>) -> anyhow::Result<Load> {
    let headers = key.map(|k| format!("{{[\"authorization\"] = \"Bearer {k}\"}}")).unwrap_or_else(|| "nil".into());
    let script = format!(
        "local i = 0\nlocal headers = {headers}\nrequest = function()\n  i = (i + 1) % {hot}\n  return wrk.format(\"GET\", \"/articles/B-\" .. (i * {stride} % {articles}) .. \"/stock\", headers)\nend\n",
        stride = 7919,
    );
    crate::wrk::run(base, &script, seconds, connections, Placement::Core(1)).await
}

async fn wait_for(base: &str, key: Option<&str>) -> anyhow::Result<()> {
    let url = format!("{base}/articles/B-0/stock");
    let http = reqwest::Client::new();
    testkit::eventually(Duration::from_secs(30), &url, || async {
        let mut request = http.get(&url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await
}

/// Starts a query-service pinned to core 0 serving from `tiers` and waits
/// until it answers; with `key`, authentication is on and `key` is valid.
async fn query_service(env: &TestEnv, exe: &std::path::Path, tiers: &str, key: Option<&str>) -> anyhow::Result<(tokio::process::Child, String)> {
    let port = testkit::free_port();
    let settings = [
        ("APP_HTTP__PORT", port.to_string()),
        ("APP_DATABASE__URL", env.database.url.clone()),
        ("APP_REDIS__URL", env.redis.url.clone()),
        ("APP_REDIS__KEY_PREFIX", env.redis.key_prefix.clone()),
        ("APP_KAFKA__BROKERS", env.kafka.brokers.clone()),
        ("APP_CACHE__TIERS", tiers.to_owned()),
        ("APP_AUTH__ENABLED", key.is_some().to_string()),
        // Checked on every request, at a rate no run reaches.
        ("APP_AUTH__RATE_LIMITS", "reader=1000000".to_owned()),
    ];
    let service = spawn_pinned(exe, &[], &settings)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&base, key).await?;
    Ok((service, base))
}

/// What one run measures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) events: usize,
    pub(crate) articles: usize,
    pub(crate) hot: usize,
    pub(crate) seconds: u64,
    pub(crate) connections: usize,
    pub(crate) rounds: usize,
}

pub(crate) async fn run(plan: Plan) -> anyhow::Result<()> {
    let Plan { events, articles, hot, seconds, connections, rounds } = plan;
    let env = TestEnv::new(1).await?;
    load(&env, events, articles).await?;
    let pool = env.pool().await?;
    let (body,): (Vec<u8>,) = sqlx::query_as("select body from rm_1.documents where key = 'stock:B-0'").fetch_one(&pool).await?;
    let exe = std::env::current_exe()?;
    let query_service_exe = exe.with_file_name("query-service");
    anyhow::ensure!(query_service_exe.exists(), "build the query-service in release mode first");
    let mut lines: Vec<(&str, Load)> = Vec::new();

    // Bare handler and memory tier, in rounds that alternate them: the
    // machine's noise then falls on both alike. Both servers stay up, idle
    // while the other is measured.
    let port = testkit::free_port();
    let body_file = std::env::temp_dir().join(format!("erp-bench-body-{}.json", std::process::id()));
    std::fs::write(&body_file, &body)?;
    let bare = spawn_pinned(&exe, &["serve-bare".into(), port.to_string(), body_file.display().to_string()], &[])?;
    let bare_base = format!("http://127.0.0.1:{port}");
    wait_for(&bare_base, None).await?;
    let (memory, memory_base) = query_service(&env, &query_service_exe, "memory,redis,postgres", None).await?;
    let new = platform::auth::keys::NewKey { name: "bench".into(), roles: vec!["reader".into()], warehouses: vec![], expires_at: None };
    let (key, _) = platform::auth::keys::create(&pool, &new).await?;
    let (keyed, keyed_base) = query_service(&env, &query_service_exe, "memory,redis,postgres", Some(&key)).await?;
    let sum_port = testkit::free_port();
    let sum = spawn_pinned(&exe, &["serve-sum".into(), sum_port.to_string(), env.database.url.clone()], &[])?;
    let sum_base = format!("http://127.0.0.1:{sum_port}");
    wait_for(&sum_base, None).await?;
    // Warm the memory tier and the SUM's pool (short runs the figures do not include).
    wrk(&memory_base, articles, hot, 2, connections, None).await?;
    wrk(&sum_base, articles, hot, 2, connections, None).await?;
    wrk(&keyed_base, articles, hot, 2, connections, Some(&key)).await?;
    let (mut bares, mut memories, mut keyeds, mut sums) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("bare handler, round {} ...", round + 1);
        bares.push(wrk(&bare_base, articles, hot, seconds, connections, None).await?);
        eprintln!("query-service, memory hits, round {} ...", round + 1);
        memories.push(wrk(&memory_base, articles, hot, seconds, connections, None).await?);
        eprintln!("query-service, memory hits with an API key, round {} ...", round + 1);
        keyeds.push(wrk(&keyed_base, articles, hot, seconds, connections, Some(&key)).await?);
        eprintln!("SUM per request, round {} ...", round + 1);
        sums.push(wrk(&sum_base, articles, hot, seconds, connections, None).await?);
    }
    lines.push(("bare axum handler, same bytes", median_load(&bares)));
    lines.push(("query-service, memory hits", median_load(&memories)));
    lines.push(("query-service, memory hits, API key checked per request", median_load(&keyeds)));
    eprintln!("memory hits, one request at a time ...");
    let memory_alone = wrk(&memory_base, articles, hot, seconds, 1, None).await?;
    eprintln!("SUM per request, one request at a time ...");
    let sum_alone = wrk(&sum_base, articles, hot, seconds, 1, None).await?;
    drop((bare, memory, keyed, sum));

    for (name, tiers) in [
        ("query-service, Redis hits (no memory tier)", "redis,postgres"),
        ("query-service, PostgreSQL hits (no memory, no Redis)", "postgres"),
    ] {
        let (service, base) = query_service(&env, &query_service_exe, tiers, None).await?;
        wrk(&base, articles, hot, 2, connections, None).await?;
        eprintln!("{name} ...");
        lines.push((name, wrk(&base, articles, hot, seconds, connections, None).await?));
        drop(service);
    }

    lines.push(("SUM over the movements per request", median_load(&sums)));

    let bare = lines[0].1;
    println!("\nquery-service: GET /articles/{{id}}/stock over {hot} articles (of {articles}, {events} events), wrk -t1 -c{connections} -d{seconds}s");
    println!("server pinned to core 0 with one tokio worker, wrk to core 1; PostgreSQL and Redis not pinned");
    println!("bare, memory (with and without an API key) and SUM: the median of {rounds} rounds alternating them\n");
    println!("| line | requests/s | p50 | p99 | ratio to bare | machine CPU per request |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, l) in &lines {
        println!(
            "| {name} | {:.0} | {:.3} ms | {:.3} ms | {:.2}x | {:.0} µs |",
            l.per_second,
            l.p50,
            l.p99,
            l.per_second / bare.per_second,
            l.cpu_us
        );
    }
    let ratios: Vec<f64> = memories.iter().zip(&bares).map(|(m, b)| m.per_second / b.per_second).collect();
    let p99s: Vec<f64> = memories.iter().zip(&bares).map(|(m, b)| m.p99 - b.p99).collect();
    let list = |v: &[f64], f: &dyn Fn(f64) -> String| v.iter().map(|x| f(*x)).collect::<Vec<_>>().join(", ");
    println!(
        "\nmemory tier vs bare, per round: {} (median {:.2}x); p99 minus bare's: {} (median {:+.3} ms)",
        list(&ratios, &|r| format!("{r:.2}x")),
        median(ratios.clone()),
        list(&p99s, &|d| format!("{d:+.3} ms")),
        median(p99s.clone())
    );
    let keyed_ratios: Vec<f64> = keyeds.iter().zip(&memories).map(|(k, m)| k.per_second / m.per_second).collect();
    println!(
        "memory tier with an API key vs without authentication, per round: {} (median {:.2}x)",
        list(&keyed_ratios, &|r| format!("{r:.2}x")),
        median(keyed_ratios.clone())
    );
    let per_round = |a: &[Load], f: &dyn Fn(&Load, &Load) -> f64| -> Vec<f64> { a.iter().zip(&sums).map(|(x, s)| f(x, s)).collect() };
    let faster = per_round(&memories, &|m, s| m.per_second / s.per_second);
    let cheaper = per_round(&memories, &|m, s| s.cpu_us / m.cpu_us);
    let bare_faster = per_round(&bares, &|b, s| b.per_second / s.per_second);
    println!(
        "memory tier vs SUM per request, {connections} connections, per round: {} (median {:.1}x the requests/s); machine CPU per request {:.1}x less (median); the bare handler: {:.1}x the requests/s (median)",
        list(&faster, &|r| format!("{r:.1}x")),
        median(faster.clone()),
        median(cheaper),
        median(bare_faster)
    );
    println!(
        "one request at a time (wrk -c1): memory p50 {:.3} ms, p99 {:.3} ms; SUM p50 {:.3} ms, p99 {:.3} ms: {:.1}x faster at p50, {:.1}x the requests/s",
        memory_alone.p50,
        memory_alone.p99,
        sum_alone.p50,
        sum_alone.p99,
        sum_alone.p50 / memory_alone.p50,
        memory_alone.per_second / sum_alone.per_second
    );
    Ok(())
}
