//! Building and running the notifier.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use platform::health;
use platform::kafka::KafkaProbe;
use platform::shutdown::CancellationToken;
use tokio::net::TcpListener;

use crate::deliver::Deliverer;
use crate::intake::Intake;
use crate::settings::Settings;

/// A bound, not yet running notifier.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    intake: Arc<Intake>,
    deliverer: Arc<Deliverer>,
    pool: sqlx::PgPool,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects, migrates and binds the health and metrics port.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::db::pool(&settings.database)?;
        platform::db::migrate(&pool, &settings.database).await?;
        platform::kafka::ensure_topic(&settings.kafka, &settings.kafka.events_topic, settings.kafka.partitions).await?;
        let kafka = Arc::new(KafkaProbe::new(&settings.kafka)?);
        let intake = Arc::new(Intake::new(pool.clone(), settings.kafka.clone(), settings.notify.clone()));
        let deliverer = Arc::new(Deliverer::new(pool.clone(), settings.webhooks.clone())?);
        // Ready while PostgreSQL and the broker answer and both loops go
        // round: a loop stuck for three of its intervals (and at least 30 s)
        // is not doing its job.
        let loops = [
            ("intake", intake.alive.clone(), settings.notify.poll_ms),
            ("delivery", deliverer.alive.clone(), settings.webhooks.poll_ms),
        ];
        let probe_pool = pool.clone();
        let readiness = health::readiness(move || {
            let (pool, kafka, loops) = (probe_pool.clone(), kafka.clone(), loops.clone());
            async move {
                let mut probes = vec![
                    ("postgres", if platform::db::ping(&pool).await { Ok(()) } else { Err("unreachable".into()) }),
                    ("kafka", kafka.probe().await),
                ];
                for (name, alive, every) in loops {
                    probes.push((name, health::went_round(&alive, (every * 3).max(30_000) as i64)));
                }
                probes
            }
        });
        let metrics_pool = pool.clone();
        let router = Router::new()
            .merge(platform::metrics::router(move || platform::metrics::observe_pool(&metrics_pool)))
            .merge(health::router(readiness));
        let (listener, addr) = settings.http.bind().await?;
        tracing::info!(%addr, "notifier listening (health and metrics)");
        Ok(Self { listener, addr, router, intake, deliverer, pool, shutdown })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the topic and delivers until the shutdown token is cancelled.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let intake = tokio::spawn(self.intake.clone().run(self.shutdown.clone()));
        let deliverer = tokio::spawn(self.deliverer.clone().run(self.shutdown.clone()));
        let sampler = tokio::spawn(sample_loop(self.pool.clone(), self.shutdown.clone()));
        platform::http::serve(self.listener, self.router, self.shutdown.clone()).await?;
        intake.await?;
        deliverer.await?;
        sampler.await?;
        Ok(())
    }
}

/// Samples the delivery gauges every few seconds.
async fn sample_loop(pool: sqlx::PgPool, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = crate::metrics::sample(&pool).await {
            tracing::debug!(error = %e, "sampling the webhook gauges failed");
        }
    }
}
