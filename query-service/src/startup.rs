//! Building and running the query-service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use platform::auth::{Access, Gate};
use platform::health;
use platform::shutdown::CancellationToken;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::cache::{DocumentCache, FetchError};
use crate::end_offsets::EndOffsets;
use crate::routes;
use crate::settings::Settings;
use crate::state::{AppState, Shared};
use crate::store::DocumentStore;

/// The OpenAPI document; the paths come from the handlers' annotations, the
/// same ones that register the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "erp-stock query-service",
        description = "The read API of the stock back end: precomputed read models, served from memory, Redis or \
                       PostgreSQL. Answers carry an ETag (If-None-Match gives 304) and `X-Possibly-Stale: true` while \
                       PostgreSQL is unreachable. Lists are keyset-paginated with opaque cursors. Every operation \
                       needs an `Authorization: Bearer` credential with the role it lists. Errors are RFC 9457 \
                       problem+json."
    ),
    tags(
        (name = "stock", description = "Stock per article, low stock"),
        (name = "catalogue", description = "The article catalogue"),
        (name = "charges", description = "Charges (lots) of an article"),
        (name = "categories", description = "Charges per category"),
        (name = "status", description = "Where the projection stands"),
        (name = "audit", description = "Who did what: the event store's actors"),
        (name = "exports", description = "Whole read models as CSV or NDJSON, streamed"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Lists larger than this are compressed for clients that accept it.
const COMPRESS_ABOVE: u16 = 1024;

/// The API routes, without serving, and the gate built from their
/// document; tests call this directly.
pub fn router(state: AppState, access: Access) -> (Router, Gate) {
    let store = state.store.clone();
    let probe_store = store.clone();
    let readiness = health::readiness(move || {
        let store = probe_store.clone();
        async move {
            // Either tier can answer; report both. Nothing can be answered
            // before the serving generation is known.
            let up = |ok: bool| if ok { Ok(()) } else { Err("unreachable".to_owned()) };
            let postgres = up(store.probe_postgres().await);
            if store.generation().is_err() {
                store.refresh_generation().await;
            }
            let read_models = store.generation().map(|_| ()).map_err(|e| e.to_string());
            vec![("postgres", postgres), ("redis", up(store.redis_up().await)), ("read_models", read_models)]
        }
    });
    let metrics = platform::metrics::router(move || {
        platform::metrics::observe_pool(store.pool());
        platform::metrics::REDIS_BREAKER_OPEN.set(i64::from(store.redis_breaker_open()));
    });
    // Lists are compressed for clients that accept it; documents are served
    // as the stored bytes, with no work per request.
    let compression = CompressionLayer::new()
        .gzip(true)
        .compress_when(SizeAbove::new(COMPRESS_ABOVE).and(NotForContentType::const_new("application/problem+json")));
    let (documents, document_paths) = OpenApiRouter::new().merge(routes::documents()).split_for_parts();
    let (lists, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(routes::lists()).split_for_parts();
    let mut openapi = openapi;
    openapi.paths.paths.extend(document_paths.paths.paths);
    platform::openapi::set_maximum(&mut openapi, "limit", u64::from(state.pages.max_limit));
    let gate = access.gate(&mut openapi);
    let router = lists
        .layer(compression)
        .merge(documents)
        .route("/cache/stats", get(cache_stats))
        .with_state(state)
        .route("/openapi.json", get(move || async move { Json(openapi) }))
        .merge(health::router(readiness))
        .merge(metrics);
    (router, gate)
}

/// A bound, not yet running query-service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
    state: AppState,
    redis: platform::redis::RedisSettings,
    warmup: Vec<String>,
    warmup_top: usize,
    hot_record_secs: u64,
}

impl Application {
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::db::pool(&settings.database)?;
        platform::db::migrate(&pool, &settings.database).await?;
        let tiers = settings.cache.tiers()?;
        let timeout = Duration::from_millis(settings.cache.postgres_timeout_ms);
        let store = Arc::new(DocumentStore::new(pool, settings.redis.clone(), tiers, timeout)?);
        store.refresh_generation().await;
        let state = AppState(Arc::new(Shared {
            store,
            cache: Arc::new(DocumentCache::new(&settings.cache, tiers.memory)),
            consistency: settings.consistency.clone(),
            pages: settings.pages.clone(),
            end_offsets: Arc::new(EndOffsets::new(&settings.kafka)),
        }));
        let access = Access::start(state.store.pool().clone(), &settings.auth, shutdown.clone())?;
        let (router, gate) = router(state.clone(), access);
        let router = platform::http::with_common_layers(router, &settings.http, gate)?;
        let (listener, addr) = settings.http.bind().await?;
        tracing::info!(%addr, "query-service listening");
        let warmup = settings.cache.warmup_keys.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect();
        Ok(Self {
            listener,
            addr,
            router,
            shutdown,
            state,
            redis: settings.redis,
            warmup,
            warmup_top: settings.cache.warmup_top,
            hot_record_secs: settings.cache.hot_record_secs.max(1),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let swapped = Arc::new(Notify::new());
        let invalidations = tokio::spawn(self.state.cache.clone().listen(self.redis, swapped.clone(), self.shutdown.clone()));
        let watch = tokio::spawn(watch(self.state.clone(), swapped, self.hot_record_secs, self.shutdown.clone()));
        tokio::spawn(warm(self.state.clone(), self.warmup, self.warmup_top));
        platform::http::serve(self.listener, self.router, self.shutdown.clone()).await?;
        self.shutdown.cancel();
        invalidations.await?;
        watch.await?;
        Ok(())
    }
}

/// Once a second (and at once after a swap): which generation serves, and
/// whether PostgreSQL answers; every `hot_record_secs`, the hot documents.
async fn watch(state: AppState, swapped: Arc<Notify>, hot_record_secs: u64, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            () = swapped.notified() => {}
        }
        state.cache.tick();
        if !state.store.postgres_up() {
            state.store.probe_postgres().await;
        }
        if state.store.refresh_generation().await {
            state.cache.invalidate_all();
        }
        rounds += 1;
        if rounds.is_multiple_of(hot_record_secs) {
            let hot = state.cache.take_hot_documents(200);
            if let Err(e) = state.store.record_hot(&hot).await {
                tracing::debug!(error = %e, "cannot record the hot documents");
            }
        }
    }
}

/// Loads the configured documents and the ones most asked for into memory,
/// once invalidations are followed (before, nothing is kept).
async fn warm(state: AppState, mut keys: Vec<String>, top: usize) {
    for _ in 0..100 {
        if state.cache.following() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match state.store.hottest(top).await {
        Ok(hot) => keys.extend(hot),
        Err(e) => tracing::debug!(error = %e, "no hot documents to warm up"),
    }
    keys.dedup();
    let mut loaded = 0;
    for key in &keys {
        let tags = crate::routes::tags(&readmodel::keys::tags_of(key));
        let store = &state.store;
        let fetched = state.cache.get(key, || Box::pin(store.get(key, tags))).await;
        match fetched {
            Ok(_) => loaded += 1,
            Err(e) if matches!(*e, FetchError::Missing(_)) => {}
            Err(e) => tracing::debug!(%key, error = %e, "warm-up fetch failed"),
        }
    }
    if !keys.is_empty() {
        tracing::info!(loaded, asked = keys.len(), "cache warmed up");
    }
}

/// `GET /cache/stats`: lookups per tier with hit rates, and the in-process
/// tier's size, invalidations and evictions (the same figures as `/metrics`).
async fn cache_stats(axum::extract::State(state): axum::extract::State<AppState>) -> Json<serde_json::Value> {
    use platform::metrics::{CACHE_EVENTS, CACHE_REQUESTS};
    let (entries, bytes) = state.cache.size();
    let tier = |name: &str| {
        let hits = CACHE_REQUESTS.with_label_values(&[name, "hit"]).get();
        let misses = CACHE_REQUESTS.with_label_values(&[name, "miss"]).get();
        let rate = if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 };
        serde_json::json!({ "hits": hits, "misses": misses, "hit_rate": rate })
    };
    let tiers = state.store.tiers();
    let mut redis = tier("redis");
    redis["enabled"] = tiers.redis.into();
    redis["errors"] = CACHE_REQUESTS.with_label_values(&["redis", "error"]).get().into();
    redis["skipped"] = CACHE_REQUESTS.with_label_values(&["redis", "skipped"]).get().into();
    redis["breaker"] = if state.store.redis_breaker_open() { "open" } else { "closed" }.into();
    let mut memory = tier("memory");
    memory["enabled"] = tiers.memory.into();
    memory["following_invalidations"] = state.cache.following().into();
    memory["bypassed"] = CACHE_REQUESTS.with_label_values(&["memory", "bypass"]).get().into();
    memory["entries"] = entries.into();
    memory["bytes"] = bytes.into();
    memory["invalidations"] = CACHE_EVENTS.with_label_values(&["invalidation"]).get().into();
    memory["evictions"] = CACHE_EVENTS.with_label_values(&["eviction"]).get().into();
    let mut postgres = tier("postgres");
    postgres["errors"] = CACHE_REQUESTS.with_label_values(&["postgres", "error"]).get().into();
    postgres["skipped"] = CACHE_REQUESTS.with_label_values(&["postgres", "skipped"]).get().into();
    postgres["up"] = state.store.postgres_up().into();
    Json(serde_json::json!({ "memory": memory, "redis": redis, "postgres": postgres }))
}
