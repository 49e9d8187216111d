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
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        self.url.parse()
    }
}

/// A pool that connects on first use, so a service starts while PostgreSQL is
/// still coming up and reports it through `/health/ready`.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    crate::metrics::set_slow_query_threshold(Duration::from_millis(settings.slow_query_ms));
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(settings.connect_options()?))
}

/// Applies pending migrations if the settings ask for it.
#[tracing::instrument(skip_all, err)]
pub async fn migrate(pool: &PgPool, settings: &DatabaseSettings) -> Result<(), sqlx::migrate::MigrateError> {
    if settings.migrate {
        MIGRATOR.run(pool).await?;
    }
    Ok(())
}

/// True when PostgreSQL answers a trivial query.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("select 1").execute(pool).await.is_ok()
}
