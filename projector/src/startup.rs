//! Building and running the projector.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use platform::health;
use platform::kafka::KafkaProbe;
use platform::shutdown::CancellationToken;
use tokio::net::TcpListener;

use crate::consumer::Projector;
use crate::progress::Progress;
use crate::settings::Settings;
use crate::sink::RedisSink;

/// A bound, not yet running projector.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    projector: Projector,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects, migrates and binds the admin listener.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::db::pool(&settings.database)?;
        platform::db::migrate(&pool, &settings.database).await?;
        let sink = Arc::new(RedisSink::new(settings.redis.clone())?);
        let kafka = Arc::new(KafkaProbe::new(&settings.kafka)?);
        let progress = Arc::new(Progress::new(Duration::from_secs(settings.projector.stall_after_secs)));
        let readiness = {
            let (pool, sink, progress) = (pool.clone(), sink.clone(), progress.clone());
            health::readiness(move || {
                let (pool, sink, kafka, progress) = (pool.clone(), sink.clone(), kafka.clone(), progress.clone());
                async move {
                    let up = |ok: bool| if ok { Ok(()) } else { Err("unreachable".to_owned()) };
                    vec![
                        ("postgres", up(platform::db::ping(&pool).await)),
                        ("redis", up(sink.ping().await)),
                        ("kafka", kafka.probe().await),
                        ("partitions", progress.probe()),
                    ]
                }
            })
        };
        let metrics_pool = pool.clone();
        let metrics = platform::metrics::router(move || platform::metrics::observe_pool(&metrics_pool));
        let router = platform::http::with_common_layers(health::router(readiness).merge(metrics), &settings.http, platform::auth::Gate::off())?;
        let (listener, addr) = settings.http.bind().await?;
        platform::kafka::ensure_topic(&settings.kafka, &settings.kafka.events_topic, settings.kafka.partitions).await?;
        if let Some(refusal) = platform::kafka::retention_refusal(&settings.kafka).await? {
            anyhow::bail!(refusal);
        }
        let connect = settings.database.connect_options()?;
        let projector = Projector::new(pool, connect, sink, settings.kafka, settings.projector, progress)?;
        tracing::info!(%addr, "projector admin listening");
        Ok(Self { listener, addr, router, projector, shutdown })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Consumes until the shutdown token is cancelled, then flushes and stops.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let server = tokio::spawn(platform::http::serve(self.listener, self.router, self.shutdown.clone()));
        let result = self.projector.run(self.shutdown.clone()).await;
        self.shutdown.cancel();
        server.await??;
        result
    }
}
