//! `/health/live` (the process runs) and `/health/ready` (its dependencies answer).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

/// The outcome of probing one dependency: `Ok` or why it failed.
pub type Probe = Result<(), String>;

type ProbeFuture = Pin<Box<dyn Future<Output = Vec<(&'static str, Probe)>> + Send>>;

/// Probes every dependency of a service, named.
pub type ReadinessCheck = Arc<dyn Fn() -> ProbeFuture + Send + Sync>;

/// A loop's heartbeat for readiness: the loop stores when it last went
/// round (milliseconds since the epoch); up while that is at most `bound_ms` ago.
pub fn went_round(alive: &std::sync::atomic::AtomicI64, bound_ms: i64) -> Probe {
    let since = chrono::Utc::now().timestamp_millis() - alive.load(std::sync::atomic::Ordering::Acquire);
    if since <= bound_ms { Ok(()) } else { Err(format!("the loop last ran {since} ms ago")) }
}

/// Builds a [`ReadinessCheck`] from an async closure.
pub fn readiness<F, Fut>(f: F) -> ReadinessCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<(&'static str, Probe)>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// The health routes. Readiness answers 503 naming each dependency that is down.
pub fn router(check: ReadinessCheck) -> Router {
    Router::new()
        .route("/health/live", get(|| async { Json(json!({ "status": "live" })) }))
        .route("/health/ready", get(ready))
        .with_state(check)
}

async fn ready(State(check): State<ReadinessCheck>) -> impl IntoResponse {
    let probes = check().await;
    let all_up = probes.iter().all(|(_, p)| p.is_ok());
    let dependencies: BTreeMap<_, _> = probes
        .into_iter()
        .map(|(name, probe)| (name, probe.err().unwrap_or_else(|| "up".to_owned())))
        .collect();
    let status = if all_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = if all_up { "ready" } else { "not ready" };
    (status, Json(json!({ "status": word, "dependencies": dependencies })))
}
