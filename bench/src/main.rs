//! Benchmarks, each printing its figures and the ratio to a baseline measured
//! in the same run on the same machine (timings never go into tests).
//!
//! `scripts/bench.sh commands` — accepted commands per second and latency of
//! the command-service at 16 and 64 concurrent clients, against the raw
//! single-row INSERT commit rate of the same PostgreSQL at the same
//! concurrency.
//!
//! `scripts/bench.sh imports` — a bulk import's lines per second against
//! the HTTP command rate of the same run, and a report over its movements.
//!
//! `scripts/bench.sh projector` — projector catch-up over a preloaded topic
//! against batch upserts of the same PostgreSQL, the broker's fetch rate and
//! the apply code fed from memory; and steady-state freshness.
//!
//! `scripts/bench.sh queries` — query-service requests per second and
//! latency from memory, Redis and PostgreSQL against a bare axum handler
//! returning the same bytes, and against a SUM over the movements per request.
//!
//! `scripts/bench.sh webhooks` — the notifier's intake and delivery rates
//! over a preloaded topic against bare HTTP POSTs to the same receiver.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod commands;
mod freshness;
mod imports;
mod projector;
mod queries;
mod stats;
mod webhooks;
mod wrk;

/// mimalloc: far less time in the allocator than glibc's malloc under this
/// workload (see the commit that introduced it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Benchmarks of the stock back end, each with a baseline from the same run")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Toggle {
    On,
    Off,
}

#[derive(Subcommand)]
enum Bench {
    /// Command-service throughput and latency vs. raw INSERT commits.
    Commands {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent clients, comma-separated.
        #[arg(long, default_value = "16,64", value_delimiter = ',')]
        clients: Vec<usize>,
        /// Distinct articles the commands are spread over.
        #[arg(long, default_value_t = 1000)]
        articles: usize,
        /// Relay settings measured, comma-separated: `off` (the write path
        /// alone) and `on` (the relay and the local broker on the same cores).
        #[arg(long, default_value = "off,on", value_delimiter = ',')]
        relay: Vec<Toggle>,
        /// Rounds per line, each a service and a baseline measurement; the
        /// medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Bulk import lines per second vs. the HTTP command rate of the same run.
    Imports {
        /// Receipt lines in the imported file.
        #[arg(long, default_value_t = 1_000_000)]
        lines: usize,
        /// Articles they are spread over.
        #[arg(long, default_value_t = 1000)]
        articles: usize,
        /// wrk connections of the HTTP baseline.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds of the HTTP baseline per round.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rounds, each the baseline and an import.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Then relay and project everything and time a movements report over it.
        #[arg(long)]
        report: bool,
    },
    /// Projector catch-up vs. batch upserts, and steady-state freshness.
    Projector {
        /// Events preloaded into the topic.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Articles they are spread over.
        #[arg(long, default_value_t = 10_000)]
        articles: usize,
        /// Most records per transaction (the projector's `APP_PROJECTOR__BATCH_SIZE`).
        #[arg(long, default_value_t = ::projector::settings::ProjectorSettings::default().batch_size)]
        batch_size: usize,
        /// Zipf exponent of how movements spread over articles: 1.0 is the
        /// usual 80/20 (the default), 0 every article equally busy (worst case).
        #[arg(long, default_value_t = 1.0)]
        skew: f64,
        /// Events per second of the freshness measurement.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Seconds of the freshness measurement.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// What to measure besides the apply code from memory and the
        /// baseline: `broker` (preload, fetch rate, catch-up), `freshness`, or `all`.
        #[arg(long, default_value = "all", value_delimiter = ',')]
        parts: Vec<String>,
        /// Transactions a batch is applied in at once (the projector's `APP_PROJECTOR__LANES`).
        #[arg(long, default_value_t = ::projector::settings::ProjectorSettings::default().lanes)]
        lanes: usize,
    },
    /// Query-service requests per tier vs. a bare handler and vs. a SUM per request.
    Queries {
        /// Events of the generated history behind the read models.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Articles they are spread over.
        #[arg(long, default_value_t = 10_000)]
        articles: usize,
        /// How many articles the requests go round (all of them fit in memory).
        #[arg(long, default_value_t = 1000)]
        hot: usize,
        /// Seconds per line.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// wrk's connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Rounds alternating the bare handler and the memory tier (the median round is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Notifier intake and delivery rates vs. bare HTTP POSTs to the same receiver.
    Webhooks {
        /// Events preloaded into the topic (each one delivery).
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Articles they are spread over (deliveries of one article go one at a time).
        #[arg(long, default_value_t = 1000)]
        articles: usize,
        /// Deliveries in flight at once (`APP_WEBHOOKS__CONCURRENCY`) and the baseline's clients.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds of the baseline.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Zipf exponent of how events spread over articles: 1.0 the usual
        /// 80/20 (a few busy articles, each delivered in order, one at a
        /// time), 0 every article equally busy.
        #[arg(long, default_value_t = 1.0)]
        skew: f64,
    },
    /// (Used by `queries`.) Serves the bytes of FILE for every stock request.
    #[command(hide = true)]
    ServeBare { port: u16, file: std::path::PathBuf },
    /// (Used by `queries`.) Serves stock computed per request with a SUM over the movements.
    #[command(hide = true)]
    ServeSum { port: u16, database_url: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Commands { seconds, clients, articles, relay, rounds } => {
            let plan = commands::Plan { duration: Duration::from_secs(seconds), articles, rounds: rounds.max(1) };
            let relays: Vec<bool> = relay.iter().map(|r| *r == Toggle::On).collect();
            commands::run(plan, &clients, &relays).await
        }
        Bench::Imports { lines, articles, clients, seconds, rounds, report } => {
            imports::run(imports::Plan { lines, articles, clients, seconds, rounds: rounds.max(1), report }).await
        }
        Bench::Projector { events, articles, batch_size, skew, rate, seconds, parts, lanes } => {
            projector::run(events, articles, batch_size, skew, rate, seconds, &parts, lanes).await
        }
        Bench::Queries { events, articles, hot, seconds, connections, rounds } => {
            queries::run(queries::Plan { events, articles, hot, seconds, connections, rounds: rounds.max(1) }).await
        }
        Bench::Webhooks { events, articles, concurrency, seconds, skew } => {
            webhooks::run(webhooks::Plan { events, articles, concurrency, seconds, skew }).await
        }
        Bench::ServeBare { port, file } => queries::serve_bare(port, std::fs::read(file)?).await,
        Bench::ServeSum { port, database_url } => queries::serve_sum(port, database_url).await,
    }
}

/// Runs `work` from `clients` concurrent tasks for `duration`; returns each
/// call's latency.
pub(crate) async fn drive<F, Fut>(clients: usize, duration: Duration, work: F) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let work = work.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < end {
                    let start = Instant::now();
                    work(client, i).await?;
                    latencies.push(start.elapsed());
                    i += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}
