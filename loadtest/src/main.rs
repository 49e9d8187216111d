//! Load tests of the whole system (docs/loadtests/README.md).
//!
//! `scripts/loadtest.sh steady|ramp|spike|soak [options]` builds the release
//! binaries, starts the servers and runs this; it starts every service,
//! loads a catalogue, sends the plan's arrivals and writes the figures, the
//! difference to the stored baseline and the report under docs/loadtests/.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio_util::sync::CancellationToken;

mod catalogue;
mod dice;
mod generator;
mod plan;
mod record;
mod sampler;
mod summary;
mod system;
mod users;

use plan::{Kind, Plan};
use summary::Summary;
use system::System;
use users::{Keys, Mix, World};

/// mimalloc, as in every binary of the workspace.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Load tests of the whole system at a fixed arrival rate (open loop)")]
struct Cli {
    /// steady: rising rates to find the capacity at each SLO; ramp: from 0 to
    /// --rate; spike: --rate, 3 × --rate for 60 s, --rate again; soak: --rate
    /// for --duration.
    plan: Kind,
    /// Arrivals per second: the spike's base, the soak's rate, the ramp's end.
    #[arg(long)]
    rate: Option<f64>,
    /// The steady plan's rates, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,400,800,1600,3200")]
    rates: Vec<f64>,
    /// Seconds per step of the steady plan.
    #[arg(long, default_value_t = 30.0)]
    step: f64,
    /// How long: the soak (default 30m), the ramp (5m), the spike's phase
    /// after the spike (2m). `90`, `90s`, `30m`, `1h`.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<f64>,
    /// Articles of the catalogue loaded before the run (0: none, the system already has one).
    #[arg(long, default_value_t = 10_000)]
    articles: usize,
    /// Weights of the user kinds.
    #[arg(long, default_value = "read=80,write=14,ryw=3,analyst=3")]
    mix: Mix,
    /// Where results.json and summary.md go (default docs/loadtests/<plan>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The baseline to compare with (default <out>/baseline.json, if there).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Store this run as the baseline.
    #[arg(long)]
    save_baseline: bool,
    /// Most arrivals in flight; later ones are counted as errors, not sent.
    #[arg(long, default_value_t = 2000)]
    max_in_flight: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds between freshness probes (one command followed at a time).
    #[arg(long, default_value_t = 0.25)]
    probe_every: f64,
    /// Use a running system instead of starting one: the command-service's URL.
    #[arg(long, requires_all = ["query_url", "database_url", "key"])]
    command_url: Option<String>,
    #[arg(long)]
    query_url: Option<String>,
    #[arg(long)]
    database_url: Option<String>,
    /// The API key of every request to a running system (every role).
    #[arg(long, env = "LOADTEST_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Also write the highest accepted sequence of every stream written to this file (JSON).
    #[arg(long)]
    accepted: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let (number, factor) = match s.trim() {
        t if t.ends_with('h') => (&t[..t.len() - 1], 3600.0),
        t if t.ends_with('m') => (&t[..t.len() - 1], 60.0),
        t if t.ends_with('s') => (&t[..t.len() - 1], 1.0),
        t => (t, 1.0),
    };
    match number.parse::<f64>() {
        Ok(n) if n > 0.0 => Ok(n * factor),
        _ => Err(format!("{s:?} is not a duration (90, 90s, 30m, 1h)")),
    }
}

fn plan_of(cli: &Cli) -> anyhow::Result<Plan> {
    let positive = |v: f64, what: &str| if v > 0.0 && v.is_finite() { Ok(v) } else { Err(anyhow::anyhow!("{what} must be above 0")) };
    Ok(match cli.plan {
        Kind::Steady => {
            anyhow::ensure!(!cli.rates.is_empty() && cli.rates.iter().all(|r| *r > 0.0), "--rates must be rates above 0");
            Plan::steady(&cli.rates, positive(cli.step, "--step")?)
        }
        Kind::Ramp => Plan::ramp(positive(cli.rate.unwrap_or(2000.0), "--rate")?, cli.duration.unwrap_or(300.0)),
        Kind::Spike => Plan::spike(positive(cli.rate.unwrap_or(200.0), "--rate")?, 60.0, 60.0, cli.duration.unwrap_or(120.0)),
        Kind::Soak => Plan::soak(positive(cli.rate.unwrap_or(200.0), "--rate")?, cli.duration.unwrap_or(1800.0)),
    })
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(String::new(), |kb| format!(", {:.0} GiB", kb / 1_048_576.0));
    format!(
        "{cores} cores ({}){memory}, shared by the services, PostgreSQL, Redis, the broker and the generator; the generator runs on core(s) {}",
        model.unwrap_or_else(|| "unknown model".into()),
        system::own_cores()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let plan = plan_of(&cli)?;
    let out = cli.out.clone().unwrap_or_else(|| PathBuf::from("docs/loadtests").join(plan.kind.name()));
    std::fs::create_dir_all(&out)?;

    let system = match (&cli.command_url, &cli.query_url, &cli.database_url, &cli.key) {
        (Some(c), Some(q), Some(d), Some(k)) => System {
            command_url: c.clone(),
            query_url: q.clone(),
            database_url: d.clone(),
            admin_key: k.clone(),
            keys: Keys { readers: vec![k.clone()], writers: vec![k.clone()], analysts: vec![k.clone()] },
            spawned: None,
        },
        _ => {
            eprintln!("starting the services (release builds next to this binary)");
            System::spawn(16, 8, 4).await?
        }
    };
    if let Some(spawned) = &system.spawned {
        eprintln!("service logs: {}", spawned.logs.display());
    }
    let result = run(&cli, &plan, &out, &system).await;
    system.stop().await?;
    result
}

async fn run(cli: &Cli, plan: &Plan, out: &std::path::Path, system: &System) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let pool = platform::db::pool(&platform::db::DatabaseSettings { url: system.database_url.clone(), max_connections: 2, ..Default::default() })?;
    let catalogue = catalogue::Catalogue::new(cli.articles.max(1));
    let mut catalogue_note = format!("{} articles", cli.articles);
    if cli.articles > 0 {
        eprintln!("loading the catalogue: {} articles through a bulk import", cli.articles);
        let (lines, took) = catalogue::load(&http, &system.command_url, &system.admin_key, &catalogue).await?;
        let events = system::settled(&pool, Duration::from_secs(1800)).await?;
        catalogue_note = format!(
            "catalogue: {} articles in {} categories, {} warehouses, {lines} import lines ({events} events, imported in {:.0} s)",
            cli.articles,
            catalogue.categories().len(),
            catalogue::WAREHOUSES.len(),
            took.as_secs_f64()
        );
        eprintln!("{catalogue_note}");
    }

    let start = Instant::now() + Duration::from_millis(500);
    let stop = CancellationToken::new();
    let armed = Arc::new(AtomicBool::new(false));
    let (probe_tx, probe_rx) = tokio::sync::mpsc::channel(1);
    let world = Arc::new(World::new(
        http.clone(),
        system.command_url.clone(),
        system.query_url.clone(),
        system.keys.clone(),
        catalogue,
        cli.mix,
        record::Recorder::new(start),
        (armed.clone(), probe_tx),
    ));
    let target = |key: &str| sampler::Target { http: http.clone(), query_url: system.query_url.clone(), key: key.to_owned(), start };
    let sampler = tokio::spawn(sampler::system(pool.clone(), target(&system.admin_key), stop.clone()));
    let prober = tokio::spawn(sampler::freshness(
        target(&system.keys.readers[0]),
        probe_rx,
        armed,
        Duration::from_secs_f64(cli.probe_every),
        stop.clone(),
    ));
    eprintln!("running plan {} for up to {:.0} s", plan.kind.name(), plan.seconds());
    let steady = plan.kind == Kind::Steady;
    let recorder_world = world.clone();
    let phases_run = generator::run(world.clone(), plan, cli.max_in_flight, cli.seed, Duration::from_secs(15), |index| {
        let (from, to) = (plan.offset_of(index), plan.offset_of(index) + plan.phases[index].seconds);
        let (p99, errors) = recorder_world.recorder.window(from, to);
        eprintln!("  {}: p99 {p99:.1} ms, errors {:.2} %", plan.phases[index].name, errors * 100.0);
        // A capacity search stops after a step far past the documents' SLO.
        !(steady && (p99 > 5.0 * summary::SLO_P99_MS || errors > 0.2))
    })
    .await;
    stop.cancel();
    let (system_samples, fresh) = (sampler.await?, prober.await?);
    let samples = world.recorder.take();

    let mut summary = summary::summarize(plan, phases_run, &samples, system_samples, fresh);
    let (heads, accepted, refused) = {
        let ledger = world.ledger.lock().expect("ledger");
        (ledger.heads.clone(), ledger.accepted, ledger.refused)
    };
    summary.accepted_commands = accepted;
    summary.refused_commands = refused;
    summary.command = std::env::args().collect::<Vec<_>>().join(" ");
    summary.started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    summary.machine = machine();
    summary.generator = "open loop: Poisson arrivals at the plan's rate, each sent at its due time on its own task and timed from its due \
                         time (coordinated omission corrected); commands retried after 503/429 with the same idempotency key, the retries inside \
                         the latency"
        .into();
    summary.mix = format!(
        "read {} %, write {} %, read-your-writes {} %, analyst {} %",
        cli.mix.read, cli.mix.write, cli.mix.read_your_writes, cli.mix.analyst
    );
    summary.catalogue = catalogue_note;

    // Every accepted command visible: the event store and the served stock at the accepted heads.
    let visible = check_visible(&http, &pool, &system.query_url, &system.admin_key, &heads).await;
    if let Some(file) = &cli.accepted {
        std::fs::write(file, serde_json::to_vec(&heads)?)?;
    }

    let text = summary::render(&summary);
    println!("{text}");
    match &visible {
        Ok(took) => println!("every accepted command ({} streams) visible in the query-service {:.1} s after the load", heads.len(), took.as_secs_f64()),
        Err(e) => println!("NOT every accepted command is visible: {e}"),
    }
    std::fs::write(out.join("results.json"), serde_json::to_vec(&summary)?)?;
    std::fs::write(out.join("summary.md"), format!("```\n{}\n```\n\n{text}", summary.command))?;
    let baseline_file = cli.baseline.clone().unwrap_or_else(|| out.join("baseline.json"));
    match std::fs::read(&baseline_file) {
        Ok(bytes) => match serde_json::from_slice::<Summary>(&bytes) {
            Ok(baseline) if baseline.plan == summary.plan => println!("\n{}", summary::compare(&summary, &baseline)),
            Ok(baseline) => println!("\nthe baseline {} is of plan {}, not compared", baseline_file.display(), baseline.plan),
            Err(e) => println!("\nthe baseline {} is unreadable: {e}", baseline_file.display()),
        },
        Err(_) => println!("\nno baseline at {} (store one with --save-baseline)", baseline_file.display()),
    }
    if cli.save_baseline {
        let mut baseline = summary.clone();
        baseline.timeline.clear();
        baseline.system.clear();
        baseline.fresh.clear();
        std::fs::write(&baseline_file, serde_json::to_string_pretty(&baseline)?)?;
        println!("stored as the baseline: {}", baseline_file.display());
    }
    visible.map(|_| ())
}

/// Waits until the outbox is drained and every stream the load wrote is
/// served at its highest accepted sequence, which is also the event store's.
async fn check_visible(
    http: &reqwest::Client,
    pool: &sqlx::PgPool,
    query_url: &str,
    key: &str,
    heads: &std::collections::HashMap<String, u64>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    system::settled(pool, Duration::from_secs(300)).await?;
    let stored: std::collections::HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("select stream_id, max(sequence) from events where stream_id = any($1) group by stream_id")
            .bind(heads.keys().cloned().collect::<Vec<_>>())
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    for (stream, head) in heads {
        let in_store = stored.get(stream).copied().unwrap_or(0);
        anyhow::ensure!(in_store == *head as i64, "{stream}: accepted up to {head}, the event store holds {in_store}");
        let article = stream.strip_prefix("article:").unwrap_or(stream);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let doc: serde_json::Value = http.get(format!("{query_url}/articles/{article}/stock")).bearer_auth(key).send().await?.json().await?;
            if doc["version"].as_u64() == Some(*head) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{stream}: accepted up to {head}, served {}", doc["version"]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert_eq!(parse_duration("90s"), Ok(90.0));
        assert_eq!(parse_duration("30m"), Ok(1800.0));
        assert_eq!(parse_duration("1h"), Ok(3600.0));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0").is_err());
    }
}
