//! Building and running the query-service.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use platform::health;
use platform::shutdown::CancellationToken;
use tokio::net::TcpListener;

use crate::cache::DocumentCache;
use crate::documents::DocumentStore;
use crate::routes;
use crate::settings::Settings;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub documents: Arc<DocumentStore>,
    pub cache: Arc<DocumentCache>,
    pub consistency: Arc<crate::settings::ConsistencySettings>,
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
    Router::new()
        .merge(routes::stock::router())
        .route("/cache/stats", axum::routing::get(cache_stats))
        .with_state(state)
        .merge(health::router(readiness))
        .merge(metrics)
}

/// A bound, not yet running query-service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
    cache: Arc<DocumentCache>,
    redis: platform::redis::RedisSettings,
}

impl Application {
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::db::pool(&settings.database)?;
        platform::db::migrate(&pool, &settings.database).await?;
        let cache = Arc::new(DocumentCache::new(&settings.cache));
        let state = AppState {
            documents: Arc::new(DocumentStore::new(pool, settings.redis.clone())?),
            cache: cache.clone(),
            consistency: Arc::new(settings.consistency.clone()),
        };
        let router = platform::http::with_common_layers(router(state), &settings.http);
        let (listener, addr) = settings.http.bind().await?;
        tracing::info!(%addr, "query-service listening");
        Ok(Self { listener, addr, router, shutdown, cache, redis: settings.redis })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let invalidations = tokio::spawn(self.cache.listen(self.redis, self.shutdown.clone()));
        platform::http::serve(self.listener, self.router, self.shutdown.clone()).await?;
        self.shutdown.cancel();
        invalidations.await?;
        Ok(())
    }
}

/// `GET /cache/stats`: lookups per tier with hit rates, and the in-process
/// tier's size, invalidations and evictions (the same figures as `/metrics`).
async fn cache_stats(axum::extract::State(state): axum::extract::State<AppState>) -> axum::Json<serde_json::Value> {
    use platform::metrics::{CACHE_EVENTS, CACHE_REQUESTS};
    let (entries, bytes) = state.cache.size().await;
    let tier = |name: &str| {
        let hits = CACHE_REQUESTS.with_label_values(&[name, "hit"]).get();
        let misses = CACHE_REQUESTS.with_label_values(&[name, "miss"]).get();
        let rate = if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 };
        serde_json::json!({ "hits": hits, "misses": misses, "hit_rate": rate })
    };
    let mut redis = tier("redis");
    redis["errors"] = CACHE_REQUESTS.with_label_values(&["redis", "error"]).get().into();
    redis["skipped"] = CACHE_REQUESTS.with_label_values(&["redis", "skipped"]).get().into();
    redis["breaker"] = if state.documents.redis_breaker_open() { "open" } else { "closed" }.into();
    let mut memory = tier("memory");
    memory["entries"] = entries.into();
    memory["bytes"] = bytes.into();
    memory["invalidations"] = CACHE_EVENTS.with_label_values(&["invalidation"]).get().into();
    memory["evictions"] = CACHE_EVENTS.with_label_values(&["eviction"]).get().into();
    axum::Json(serde_json::json!({ "memory": memory, "redis": redis, "postgres": tier("postgres") }))
}
