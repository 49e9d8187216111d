use clap::{Parser, Subcommand};
use projector::rebuild::RebuildOptions;
use projector::sink::RedisSink;
use projector::{Application, Settings};

/// mimalloc: far less time in the allocator than glibc's malloc under this
/// workload (see the commit that introduced it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The projector of the stock back end: builds the read models from the
/// events topic. Settings come from `APP_*` environment variables
/// (docs/configuration.md).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the events topic and maintain the read models (the default).
    Run,
    /// Replay the topic from offset 0 into a new generation of the read
    /// models while the current one serves, then swap (blue/green).
    Rebuild {
        /// Most records applied in one transaction.
        #[arg(long, default_value_t = 5000)]
        batch_size: usize,
        /// Seconds the replaced generation is kept after the swap before it is dropped.
        #[arg(long, default_value_t = 30)]
        keep_old_secs: u64,
        /// Keep the replaced generation (drop it later with `drop-generation`).
        #[arg(long)]
        keep_old: bool,
    },
    /// Records the projector could not apply, and re-driving them.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Print a checksum of the serving generation's read models (equal
    /// checksums mean equal read models).
    Checksum,
    /// Drop a generation that no longer serves.
    DropGeneration { generation: i64 },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// List parked records (oldest first) as JSON lines.
    List {
        /// Also list re-driven and skipped ones.
        #[arg(long)]
        all: bool,
    },
    /// Apply the parked records of halted streams again, in order (after a fix).
    Redrive {
        /// Only this stream, e.g. `article:ART-1000`.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Pass over parked record ID (the first its stream waits on) and re-drive the rest.
    Skip { id: i64 },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let settings: Settings = platform::settings::start(|s: &Settings| &s.log, !matches!(command, Command::Run))?;
    let admin = || async {
        let pool = platform::db::pool(&settings.database)?;
        platform::db::migrate(&pool, &settings.database).await?;
        let sink = RedisSink::new(settings.redis.clone())?;
        anyhow::Ok((pool, sink))
    };
    match command {
        Command::Run => {
            let app = Application::build(settings, platform::shutdown::on_signal()).await?;
            app.run_until_stopped().await?;
        }
        Command::Rebuild { batch_size, keep_old_secs, keep_old } => {
            let (pool, sink) = admin().await?;
            let options = RebuildOptions { batch_size, keep_old_secs, keep_old };
            let report = projector::rebuild::rebuild(&pool, &sink, &settings.kafka, &options).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::DeadLetters(DeadLetterCommand::List { all }) => {
            let (pool, _) = admin().await?;
            for letter in projector::dead_letters::list(&pool, all).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        Command::DeadLetters(DeadLetterCommand::Redrive { stream }) => {
            let (pool, sink) = admin().await?;
            let topic = &settings.kafka.events_topic;
            for stream in projector::dead_letters::redrive(&pool, &sink, topic, stream.as_deref()).await? {
                println!("{}", serde_json::to_string(&stream)?);
            }
        }
        Command::DeadLetters(DeadLetterCommand::Skip { id }) => {
            let (pool, sink) = admin().await?;
            let result = projector::dead_letters::skip(&pool, &sink, &settings.kafka.events_topic, id).await?;
            println!("{}", serde_json::to_string(&result)?);
        }
        Command::Checksum => {
            let (pool, _) = admin().await?;
            let generation = readmodel::serving(&pool).await?;
            let mut conn = pool.acquire().await?;
            let checksum = projector::rebuild::checksum(&mut conn, &generation).await?;
            println!("{{\"generation\":{},\"checksum\":\"{checksum}\"}}", generation.id);
        }
        Command::DropGeneration { generation } => {
            let (pool, sink) = admin().await?;
            let generation = readmodel::Generation::new(generation);
            projector::rebuild::drop_generation(&pool, &sink, &generation).await?;
            println!("{{\"dropped\":{}}}", generation.id);
        }
    }
    Ok(())
}
