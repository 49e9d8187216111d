//! Bulk import throughput against the HTTP command path, and a report over
//! the movements the import made.
//!
//! The baseline is the command-service's own rate in the same run: `clients`
//! wrk connections posting receipts over `articles` articles for `seconds`
//! (as `scripts/bench.sh commands`, relay off: the write path alone). Then
//! `lines` receipts over the same articles go in as one NDJSON import
//! (uploaded with curl), run by a worker (release build) with its default
//! settings; its rate is lines decided and committed per second between the
//! job's start and finish (the upload is timed apart). The target:
//! at least 0.5x of the HTTP rate.
//!
//! With `--report`, the events are then relayed and projected, and a
//! `movements` report (CSV) over all of them is timed from its job's start
//! to its finish.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::TestEnv;

use crate::wrk::{Placement, median};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) lines: usize,
    pub(crate) articles: usize,
    pub(crate) clients: usize,
    pub(crate) seconds: u64,
    pub(crate) rounds: usize,
    pub(crate) report: bool,
}

fn binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(exe.exists(), "{} is missing: build it with `cargo build --release -p {name}`", exe.display());
    Ok(exe)
}

async fn spawn(name: &str, env: &TestEnv, extra: &[(&str, &str)]) -> anyhow::Result<(tokio::process::Child, String)> {
    let port = testkit::free_port();
    let mut command = tokio::process::Command::new(binary(name)?);
    command
        .env("APP_HTTP__PORT", port.to_string())
        .env("APP_DATABASE__URL", &env.database.url)
        .env("APP_LOG__FILTER", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if name != "worker" {
        command.env("APP_KAFKA__BROKERS", &env.kafka.brokers).env("APP_KAFKA__EVENTS_TOPIC", &env.kafka.events_topic);
    }
    if name == "projector" {
        command.env("APP_REDIS__URL", &env.redis.url).env("APP_REDIS__KEY_PREFIX", &env.redis.key_prefix);
    }
    for (k, v) in extra {
        command.env(k, v);
    }
    let child = command.spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    testkit::wait_ready(&base, Duration::from_secs(60)).await?;
    Ok((child, base))
}

pub(crate) async fn run(plan: Plan) -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let no_auth = [("APP_AUTH__ENABLED", "false"), ("APP_RELAY__ENABLED", "false")];
    let (_writer, base) = spawn("command-service", &env, &no_auth).await?;
    let http = reqwest::Client::new();
    eprintln!("setting up {} articles ...", plan.articles);
    for a in 0..plan.articles {
        let r = http
            .post(format!("{base}/articles"))
            .json(&json!({ "article": format!("B-{a}"), "name": "bench", "category": "bench", "unit": {"code": "pcs"} }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "register: {}", r.status());
        let r = http
            .post(format!("{base}/articles/B-{a}/charges"))
            .json(&json!({ "charge": "L1", "production_date": "2026-11-01" }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "charge: {}", r.status());
    }

    let script = format!(
        "local i = 0\n\
         request = function()\n\
         \x20 i = i + 1\n\
         \x20 local body = '{{\"article\":\"B-' .. ((i * 7919) % {articles}) .. '\",\"charge\":\"L1\",\"warehouse\":\"WH\",\"quantity\":1}}'\n\
         \x20 return wrk.format(\"POST\", \"/stock/receipts\", {{[\"content-type\"] = \"application/json\"}}, body)\n\
         end\n",
        articles = plan.articles
    );

    let path = std::env::temp_dir().join(format!("erp-bench-import-{}.ndjson", std::process::id()));
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for i in 0..plan.lines {
            writeln!(
                file,
                "{{\"type\":\"receipt\",\"article\":\"B-{}\",\"charge\":\"L1\",\"warehouse\":\"WH\",\"quantity\":1}}",
                (i * 7919) % plan.articles
            )?;
        }
        file.flush()?;
    }
    let bytes = std::fs::metadata(&path)?.len();
    let (_worker, _) = spawn("worker", &env, &[]).await?;
    let pool = env.pool().await?;

    println!(
        "\nbulk import: {} receipt lines over {} articles ({:.0} MB NDJSON), run by one worker with its defaults",
        plan.lines,
        plan.articles,
        bytes as f64 / 1e6
    );
    println!("baseline: the HTTP path in the same run, wrk with {} connections posting receipts for {} s (relay off)\n", plan.clients, plan.seconds);
    println!("| round | HTTP commands/s | import lines/s | ratio | upload |");
    println!("|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for round in 1..=plan.rounds {
        eprintln!("round {round}: the HTTP path ...");
        let load = crate::wrk::run(&base, &script, plan.seconds, plan.clients, Placement::Anywhere).await?;
        eprintln!("round {round}: uploading and importing ...");
        let upload_start = Instant::now();
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-X", "POST", "--data-binary"])
            .arg(format!("@{}", path.display()))
            .arg(format!("{base}/jobs/imports?format=ndjson"))
            .output()
            .await?;
        let upload = upload_start.elapsed();
        let job: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| anyhow::anyhow!("upload answer: {e}: {}", String::from_utf8_lossy(&out.stdout)))?;
        let id: uuid::Uuid = job["id"].as_str().ok_or_else(|| anyhow::anyhow!("no job id: {job}"))?.parse()?;
        let seconds = job_seconds(&pool, id, Duration::from_secs(3600)).await?;
        let (status, accepted): (String, Option<i64>) =
            sqlx::query_as("select status, (result->>'accepted')::int8 from jobs where id = $1").bind(id).fetch_one(&pool).await?;
        anyhow::ensure!(status == "succeeded" && accepted == Some(plan.lines as i64), "the import ended {status} with {accepted:?} lines accepted");
        let rate = plan.lines as f64 / seconds;
        let ratio = rate / load.per_second;
        ratios.push(ratio);
        println!("| {round} | {:.0} | {rate:.0} | {ratio:.2}x | {:.1} s |", load.per_second, upload.as_secs_f64());
    }
    println!("\nratio (median of rounds): {:.2}x (target: at least 0.50x)", median(ratios));
    std::fs::remove_file(&path)?;

    if plan.report {
        report(&env, &base, &pool).await?;
    }
    Ok(())
}

/// Seconds between the job's start and finish, once it is final.
async fn job_seconds(pool: &sqlx::PgPool, id: uuid::Uuid, timeout: Duration) -> anyhow::Result<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let row: (String, Option<f64>) = sqlx::query_as(
            "select status, extract(epoch from finished_at - started_at)::float8 from jobs where id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await?;
        if let (status, Some(seconds)) = &row
            && status != "queued"
            && status != "running"
        {
            return Ok(*seconds);
        }
        anyhow::ensure!(Instant::now() < deadline, "the job did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Relays and projects everything, then times a movements report over it.
async fn report(env: &TestEnv, base: &str, pool: &sqlx::PgPool) -> anyhow::Result<()> {
    eprintln!("relaying and projecting every event for the report ...");
    let (_relay, _) = spawn("command-service", env, &[("APP_AUTH__ENABLED", "false"), ("APP_RELAY__ENABLED", "true")]).await?;
    let (_projector, _) = spawn("projector", env, &[]).await?;
    let (events,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(pool).await?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let generation = readmodel::serving(pool).await?;
        let (applied,): (Option<i64>,) =
            sqlx::query_as(&format!("select sum(sequence)::int8 from {}.streams", generation.schema)).fetch_one(pool).await?;
        if applied == Some(events) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the projector did not catch up");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let generation = readmodel::serving(pool).await?;
    let (movements,): (i64,) = sqlx::query_as(&format!("select count(*) from {}.movements", generation.schema)).fetch_one(pool).await?;
    let http = reqwest::Client::new();
    let job: Value = http
        .post(format!("{base}/jobs/reports"))
        .json(&json!({ "report": "movements", "format": "csv", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z" }))
        .send()
        .await?
        .json()
        .await?;
    let id: uuid::Uuid = job["id"].as_str().ok_or_else(|| anyhow::anyhow!("no job id: {job}"))?.parse()?;
    let seconds = job_seconds(pool, id, Duration::from_secs(3600)).await?;
    let (rows, bytes): (Option<i64>, Option<i64>) =
        sqlx::query_as("select (result->>'rows')::int8, (result->>'bytes')::int8 from jobs where id = $1").bind(id).fetch_one(pool).await?;
    println!(
        "\nmovements report (CSV) over {movements} movements: {:?} rows, {:.0} MB, {seconds:.1} s from the job's start to its finish (file stored)",
        rows,
        bytes.unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}
