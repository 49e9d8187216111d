//! Benchmarks, each printing its figures and the ratio to a baseline measured
//! in the same run on the same machine (timings never go into tests).
//!
//! `scripts/bench.sh commands` — accepted commands per second and latency of
//! the command-service at 16 and 64 concurrent clients, against the raw
//! single-row INSERT commit rate of the same PostgreSQL at the same
//! concurrency.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod commands;
mod stats;

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
        /// Run the outbox relay (and so the broker's writes) during the measurement.
        #[arg(long, default_value = "on")]
        relay: Toggle,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Commands { seconds, clients, articles, relay } => {
            commands::run(Duration::from_secs(seconds), &clients, articles, relay == Toggle::On).await
        }
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
