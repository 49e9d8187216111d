//! Building and running the worker.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use platform::health;
use platform::shutdown::CancellationToken;
use tokio::net::TcpListener;

use crate::runner::Runner;
use crate::settings::Settings;

/// A bound, not yet running worker.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    runner: Arc<Runner>,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects, migrates and binds the health and metrics port.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::db::pool(&settings.database)?;
        platform::db::migrate(&pool, &settings.database).await?;
        let runner = Arc::new(Runner::new(pool.clone(), settings.jobs.clone(), settings.domain.policy()?)?);
        // Ready while the database answers and the claim loop goes round:
        // a loop stuck for three poll intervals (and at least 5 s) is not doing its job.
        let alive = runner.alive.clone();
        let stuck_after = (settings.jobs.poll_ms * 3).max(5_000) as i64;
        let probe_pool = pool.clone();
        let readiness = health::readiness(move || {
            let pool = probe_pool.clone();
            let alive = alive.clone();
            async move {
                let db = if platform::db::ping(&pool).await { Ok(()) } else { Err("unreachable".into()) };
                vec![("postgres", db), ("claim_loop", health::went_round(&alive, stuck_after))]
            }
        });
        let metrics_pool = pool.clone();
        let router = Router::new()
            .merge(platform::metrics::router(move || platform::metrics::observe_pool(&metrics_pool)))
            .merge(health::router(readiness));
        let (listener, addr) = settings.http.bind().await?;
        tracing::info!(%addr, "worker listening (health and metrics)");
        Ok(Self { listener, addr, router, runner, shutdown })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs jobs and serves health and metrics until the shutdown token is cancelled.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let runner = tokio::spawn(self.runner.clone().run(self.shutdown.clone()));
        platform::http::serve(self.listener, self.router, self.shutdown.clone()).await?;
        runner.await?;
        Ok(())
    }
}
