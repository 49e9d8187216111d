//! PostgreSQL: settings, the connection pool and the schema migrations.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The schema of every table, from the workspace's `migrations/` directory.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How a service reaches PostgreSQL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Connection URL of the project's database.
    pub url: String,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before it fails, in milliseconds.
    /// Kept short so that a down database gives a fast 503, not a hang.
    pub acquire_timeout_ms: u64,
    /// Apply pending migrations at start (they take an advisory lock, so instances
    /// starting together are safe).
    pub migrate: bool,
    /// A statement slower than this is logged and counted as slow, in milliseconds.
    pub slow_query_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres:postgres@127.0.0.1:5432/erp_stock".into(),
            max_connections: 16,
            acquire_timeout_ms: 2_000,
            migrate: true,
            slow_query_ms: 1_000,
        }
    }
}

impl DatabaseSettings {
    /// The URL's options, with PostgreSQL's JIT compiler off for every
    /// session: the services run short statements whose planner estimates
    /// can cross `jit_above_cost` (the stock-as-of statement does, with a
    /// set-returning function estimated at 100 rows), and compiling one then
    /// costs 20 to 50 ms of CPU for a statement that runs in under one
    /// (found by the load test, docs/benchmarks.md#whole-system).
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        Ok(self.url.parse::<PgConnectOptions>()?.options([("jit", "off")]))
    }
}

/// A connection idle for longer than this is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A pool that connects on first use, so a service starts while PostgreSQL is
/// still coming up and reports it through `/health/ready`.
///
/// sqlx pings every connection it hands out by default: a round trip per
/// query, which under load doubled the statements PostgreSQL answered. Here
/// only a connection idle for more than a second is pinged; one in use moments
/// ago is known to work (and sqlx still tests each connection as it returns
/// to the pool, closing broken ones).
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    crate::metrics::set_slow_query_threshold(Duration::from_millis(settings.slow_query_ms));
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    use sqlx::Connection;
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(settings.connect_options()?))
}

/// A connection of its own, outside the pool, for a task that runs one
/// statement after another (a batch worker): no pool hand-over, and none of
/// the pool's pings. Connects on first use and again after [`Self::discard`].
#[derive(Debug)]
pub struct Dedicated {
    options: PgConnectOptions,
    connection: Option<sqlx::PgConnection>,
}

impl Dedicated {
    pub fn new(options: PgConnectOptions) -> Self {
        Self { options, connection: None }
    }

    /// The connection, made now if there is none.
    pub async fn get(&mut self) -> Result<&mut sqlx::PgConnection, sqlx::Error> {
        use sqlx::Connection;
        if self.connection.is_none() {
            self.connection = Some(sqlx::PgConnection::connect_with(&self.options).await?);
        }
        Ok(self.connection.as_mut().expect("just made"))
    }

    /// Drops the connection (after a failure that may have broken it); the
    /// next [`Self::get`] connects again.
    pub fn discard(&mut self) {
        self.connection = None;
    }
}

/// Applies pending migrations if the settings ask for it.
#[tracing::instrument(skip_all, err)]
pub async fn migrate(pool: &PgPool, settings: &DatabaseSettings) -> Result<(), sqlx::migrate::MigrateError> {
    if settings.migrate {
        MIGRATOR.run(pool).await?;
    }
    Ok(())
}

/// Whether `e` means "PostgreSQL cannot be reached right now" (a 503, a
/// retry) rather than a defect or a refusal: the connection broke or could
/// not be made (I/O, TLS, a protocol error mid-stream, the pool's timeout),
/// or the server reports a connection exception (SQLSTATE class 08) or an
/// operator intervention (57P: shutting down, restarting, not yet accepting
/// connections). Every service decides it here.
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) || e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
}

/// True when PostgreSQL answers a trivial query.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("select 1").execute(pool).await.is_ok()
}
