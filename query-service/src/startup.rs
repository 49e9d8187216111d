//! Building and running the query-service.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use platform::health;
use platform::shutdown::CancellationToken;
use tokio::net::TcpListener;

use crate::documents::DocumentStore;
use crate::routes;
use crate::settings::Settings;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub documents: Arc<DocumentStore>,
}

/// The API routes, without serving; tests call this directly.
pub fn router(state: AppState) -> Router {
    let documents = state.documents.clone();
    let probe_documents = documents.clone();
    let readiness = health::readiness(move || {
        let documents = probe_documents.clone();
        async move {
            // Either tier can answer; report both.
            let up = |ok: bool| if ok { Ok(()) } else { Err("unreachable".to_owned()) };
            vec![("postgres", up(documents.postgres_up().await)), ("redis", up(documents.redis_up().await))]
        }
    });
    let metrics = platform::metrics::router(move || documents.observe_pool());
    Router::new().merge(routes::stock::router()).with_state(state).merge(health::router(readiness)).merge(metrics)
}

/// A bound, not yet running query-service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::db::pool(&settings.database)?;
        platform::db::migrate(&pool, &settings.database).await?;
        let state = AppState { documents: Arc::new(DocumentStore::new(pool, settings.redis.clone())?) };
        let router = platform::http::with_common_layers(router(state), &settings.http);
        let (listener, addr) = settings.http.bind().await?;
        tracing::info!(%addr, "query-service listening");
        Ok(Self { listener, addr, router, shutdown })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        platform::http::serve(self.listener, self.router, self.shutdown).await?;
        Ok(())
    }
}
