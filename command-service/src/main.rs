use clap::{Parser, Subcommand};
use command_service::republish::{self, Options};
use command_service::{Application, Settings};

/// mimalloc: far less time in the allocator than glibc's malloc under this
/// workload (see the commit that introduced it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The command-service of the stock back end: the write API and the outbox
/// relay. Settings come from `APP_*` environment variables
/// (docs/configuration.md).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the write API and relay the outbox (the default).
    Run,
    /// Copy every event of the event store to an empty topic, as the relay
    /// sent it (same ids, keys and headers), stream by stream in sequence
    /// order: rebuilds a lost topic. Resumes where an interrupted run
    /// stopped. Prints progress to stderr and a JSON report to stdout.
    Republish {
        /// The topic to write; created with `APP_KAFKA__PARTITIONS` partitions if missing.
        #[arg(long)]
        topic: String,
        /// Events per round (one broker confirmation and one progress row each).
        #[arg(long, default_value_t = 5000)]
        batch_size: i64,
        /// Forget an interrupted run into this topic and start over.
        #[arg(long)]
        restart: bool,
    },
    /// Manage API keys (needs only the database settings; this is how the
    /// first admin key is made).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key and print it once, with its record, as JSON.
    Create {
        /// Unique name of the client, recorded as the actor of its events (`api_key:<name>`).
        #[arg(long)]
        name: String,
        /// A role: reader, writer, master-data, analyst, admin (repeat or comma-separate).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Limit the key to a warehouse (repeat or comma-separate); none: every warehouse.
        #[arg(long = "warehouse")]
        warehouses: Vec<String>,
        /// When the key stops working (RFC 3339), e.g. 2027-06-30T00:00:00Z.
        #[arg(long)]
        expires: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// List every key (never the secrets), as JSON lines.
    List,
    /// Revoke a key by id or name; every instance stops accepting it within seconds.
    Revoke {
        /// The key's id (the 8 hex digits after `erp_`) or its name.
        key: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let settings: Settings = platform::settings::start(|s: &Settings| &s.log, !matches!(command, Command::Run))?;
    match command {
        Command::Run => {
            let app = Application::build(settings, platform::shutdown::on_signal()).await?;
            app.run_until_stopped().await
        }
        Command::Republish { topic, batch_size, restart } => {
            let pool = platform::db::pool(&settings.database)?;
            platform::db::migrate(&pool, &settings.database).await?;
            let options = Options { topic, batch_size, restart };
            let report = republish::republish(&pool, &settings.kafka, &options, |done, total| {
                eprintln!("republished {done} of {total} events ({:.0} %)", 100.0 * done as f64 / total.max(1) as f64);
            })
            .await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Keys { action } => {
            let pool = platform::db::pool(&settings.database)?;
            platform::db::migrate(&pool, &settings.database).await?;
            keys(&pool, action).await
        }
    }
}

async fn keys(pool: &sqlx::PgPool, action: KeysAction) -> anyhow::Result<()> {
    use platform::auth::keys;
    match action {
        KeysAction::Create { name, roles, warehouses, expires } => {
            let (key, record) = keys::create(pool, &keys::NewKey { name, roles, warehouses, expires_at: expires }).await?;
            println!("{}", serde_json::json!({ "key": key, "record": record }));
            eprintln!("the key is shown this once: store it now (only its hash is kept)");
        }
        KeysAction::List => {
            for record in keys::list(pool).await? {
                println!("{}", serde_json::to_string(&record)?);
            }
        }
        KeysAction::Revoke { key } => match keys::revoke(pool, &key).await? {
            Some(record) => println!("{}", serde_json::to_string(&record)?),
            None => anyhow::bail!("no key with id or name {key:?}"),
        },
    }
    Ok(())
}
