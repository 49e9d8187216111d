//! Serving an axum router: binding, the common middleware and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, Request, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Header carrying the id of one HTTP request.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Header carrying the id that groups everything caused by one business request.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The HTTP listener of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpSettings {
    /// Address to bind; loopback by default.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests do this).
    pub port: u16,
    /// A request that takes longer is answered with 408.
    pub request_timeout_ms: u64,
    /// Largest accepted request body; larger ones get 413.
    pub body_limit_bytes: usize,
}

impl HttpSettings {
    pub fn on_port(port: u16) -> Self {
        Self { host: "127.0.0.1".into(), port, request_timeout_ms: 10_000, body_limit_bytes: 64 * 1024 }
    }

    /// Binds the listener; the returned address carries the real port.
    pub async fn bind(&self) -> std::io::Result<(TcpListener, SocketAddr)> {
        let listener = TcpListener::bind((self.host.as_str(), self.port)).await?;
        let addr = listener.local_addr()?;
        Ok((listener, addr))
    }
}

/// Request ids, a tracing span per request (method, route template, request and
/// correlation id), request metrics by route template, and the request timeout.
pub fn with_common_layers(router: Router, settings: &HttpSettings) -> Router {
    let trace = TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
            .unwrap_or("unmatched");
        let header = |name: &HeaderName| {
            request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
        };
        tracing::info_span!(
            "http",
            method = %request.method(),
            route,
            request_id = header(&REQUEST_ID),
            correlation_id = header(&CORRELATION_ID),
        )
    });
    router
        .layer(axum::middleware::from_fn(crate::metrics::http_layer))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(settings.request_timeout_ms),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Serves until `shutdown` is cancelled, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
