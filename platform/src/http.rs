//! Serving an axum router: binding, the common middleware and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;

use crate::auth::gate::Admission;

/// Header carrying the id of one HTTP request.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Header carrying the id that groups everything caused by one business request.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
/// W3C Trace Context ([`crate::trace`]).
pub const TRACEPARENT: HeaderName = HeaderName::from_static(crate::trace::TRACEPARENT);

/// The HTTP listener of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpSettings {
    /// Address to bind; loopback by default.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests do this).
    pub port: u16,
    /// A request that takes longer is answered with 503 (problem+json,
    /// `Retry-After`); 0: no such limit (for a service whose every wait has
    /// its own deadline).
    pub request_timeout_ms: u64,
    /// Largest accepted request body; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Largest accepted total size of the request headers (names and
    /// values); larger ones get 431.
    pub header_limit_bytes: usize,
    /// Deadlines of single routes instead of `request_timeout_ms`, as
    /// `METHOD /route/{template}=ms`, comma-separated (0: none).
    pub route_timeouts_ms: String,
    /// Origins allowed to call the API from a browser (CORS), comma-separated;
    /// empty: no CORS headers at all (browsers refuse cross-origin calls).
    pub cors_origins: String,
}

impl HttpSettings {
    pub fn on_port(port: u16) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port,
            request_timeout_ms: 10_000,
            body_limit_bytes: 64 * 1024,
            header_limit_bytes: 16 * 1024,
            route_timeouts_ms: String::new(),
            cors_origins: String::new(),
        }
    }

    /// The deadline of each route listed in `route_timeouts_ms`.
    fn route_timeouts(&self) -> anyhow::Result<Vec<(axum::http::Method, String, Option<Duration>)>> {
        self.route_timeouts_ms
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let bad = || anyhow::anyhow!("APP_HTTP__ROUTE_TIMEOUTS_MS: expected `METHOD /route=ms`, got {entry:?}");
                let (route, ms) = entry.rsplit_once('=').ok_or_else(bad)?;
                let (method, route) = route.trim().split_once(' ').ok_or_else(bad)?;
                let ms: u64 = ms.trim().parse().map_err(|_| bad())?;
                let method = method.trim().to_uppercase().parse().map_err(|_| bad())?;
                Ok((method, route.trim().to_owned(), (ms > 0).then(|| Duration::from_millis(ms))))
            })
            .collect()
    }

    /// Binds the listener; the returned address carries the real port.
    pub async fn bind(&self) -> std::io::Result<(TcpListener, SocketAddr)> {
        let listener = TcpListener::bind((self.host.as_str(), self.port)).await?;
        let addr = listener.local_addr()?;
        Ok((listener, addr))
    }
}

/// Request ids, a tracing span per request (method, route template, request
/// and correlation id), request metrics by route template, the header and
/// body limits, the request timeout (none when `request_timeout_ms` is 0),
/// and authentication and authorisation (`gate`, see [`crate::auth::gate`]).
///
/// One hand-written layer ([`Observe`]) does all of it: measured with
/// `scripts/bench.sh queries`, the four stock layers it first replaced
/// (tower-http's request id, propagation and trace layers and a `from_fn`
/// metrics middleware) cost 40 % of an answer served from memory, and every
/// further layer a route gets costs a boxed service call per request.
///
/// Then CORS, when origins are configured (outside everything else, so that
/// a browser's preflight is answered without a credential).
pub fn with_common_layers(router: Router, settings: &HttpSettings, gate: crate::auth::Gate) -> anyhow::Result<Router> {
    let timeout = (settings.request_timeout_ms > 0).then(|| Duration::from_millis(settings.request_timeout_ms));
    let observe = ObserveLayer {
        body_limit: settings.body_limit_bytes,
        header_limit: settings.header_limit_bytes,
        timeout,
        routes: settings.route_timeouts()?.into(),
        gate,
    };
    let router = router.layer(observe);
    let origins: Vec<HeaderValue> = settings
        .cors_origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| HeaderValue::from_str(o).map_err(|_| anyhow::anyhow!("APP_HTTP__CORS_ORIGINS: {o:?} is no origin")))
        .collect::<anyhow::Result<_>>()?;
    if origins.is_empty() {
        return Ok(router);
    }
    use axum::http::{Method, header};
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-consistency-token"),
            CORRELATION_ID,
        ])
        .expose_headers([header::ETAG, header::RETRY_AFTER, REQUEST_ID, HeaderName::from_static("x-possibly-stale")])
        .max_age(Duration::from_secs(600));
    Ok(router.layer(cors))
}

/// Applies [`Observe`].
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    /// Largest accepted request body (axum's extractors answer 413 beyond it).
    pub body_limit: usize,
    /// Largest accepted request headers (431 beyond).
    pub header_limit: usize,
    /// Answer 503 after this long.
    pub timeout: Option<Duration>,
    /// Deadlines of single routes instead of `timeout`.
    pub routes: std::sync::Arc<[(axum::http::Method, String, Option<Duration>)]>,
    /// Who may do what.
    pub gate: crate::auth::Gate,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<<DefaultBodyLimit as Layer<S>>::Service>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner: DefaultBodyLimit::max(self.body_limit).layer(inner),
            timeout: self.timeout,
            header_limit: self.header_limit,
            routes: self.routes.clone(),
            gate: self.gate.clone(),
        }
    }
}

/// Gives every request an id (`x-request-id`, kept when the client sent one,
/// echoed in the response), runs it in a span (when spans are enabled) with
/// a deadline, and counts and times it by route template.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    timeout: Option<Duration>,
    header_limit: usize,
    routes: std::sync::Arc<[(axum::http::Method, String, Option<Duration>)]>,
    gate: crate::auth::Gate,
}

impl<S> tower::Service<Request<axum::body::Body>> for Observe<S>
where
    S: tower::Service<Request<axum::body::Body>, Response = axum::response::Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = Observed<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<axum::body::Body>) -> Self::Future {
        let start = std::time::Instant::now();
        let [sent_id, correlation, traceparent] = first_values(request.headers(), [&REQUEST_ID, &CORRELATION_ID, &TRACEPARENT]);
        let id = match sent_id {
            Some(id) => id,
            None => {
                let id = next_request_id();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        let limit = match route.as_ref().and_then(|r| self.routes.iter().find(|(m, t, _)| *m == method && t == r.as_str())) {
            Some((_, _, limit)) => *limit,
            None => self.timeout,
        };
        let header_bytes: usize = request.headers().iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        let span = if tracing::enabled!(tracing::Level::INFO) {
            let correlation = correlation.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
            // A request without a traceparent gets its trace where one starts (a command's events).
            let trace_id = crate::trace::trace_id_of(traceparent.as_ref().and_then(|v| v.to_str().ok()));
            let span = tracing::info_span!(
                "http",
                method = %method,
                route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
                request_id = id.to_str().unwrap_or(""),
                correlation_id = correlation,
                trace_id = tracing::field::Empty,
            );
            if !trace_id.is_empty() {
                span.record("trace_id", trace_id.as_str());
            }
            span
        } else {
            tracing::Span::none()
        };
        if header_bytes > self.header_limit {
            let inner = Deadline::Refused { response: Some(headers_too_large(header_bytes, self.header_limit)) };
            return Observed { inner, span, done: Some(Finish { id, route, method, start, limit, principal: None }) };
        }
        let principal = match self.gate.admit(&mut request, route.as_ref().map(MatchedPath::as_str)) {
            Admission::Go(principal) => principal,
            Admission::Refused(response) => {
                let inner = Deadline::Refused { response: Some(response) };
                return Observed { inner, span, done: Some(Finish { id, route, method, start, limit, principal: None }) };
            }
            Admission::Verify(credential, roles) => {
                // The clone that is ready goes into the future (tower's rule).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let gate = self.gate.clone();
                let verified = async move {
                    let principal = match gate.verify(&credential, roles).await {
                        Ok(principal) => principal,
                        Err(refused) => return Ok(refused),
                    };
                    request.extensions_mut().insert(principal.clone());
                    let response = tower::ServiceExt::oneshot(&mut inner, request).await?;
                    crate::auth::gate::observe_refusal(&principal, response.status());
                    Ok(response)
                };
                let future: Slow<S::Error> = match limit {
                    Some(limit) => Box::pin(async move { tokio::time::timeout(limit, verified).await }),
                    None => Box::pin(async move { Ok(verified.await) }),
                };
                let inner = Deadline::Verifying { future };
                return Observed { inner, span, done: Some(Finish { id, route, method, start, limit, principal: None }) };
            }
        };
        let done = Some(Finish { id, route, method, start, limit, principal });
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let inner = match limit {
            Some(limit) => Deadline::Limited { future: tokio::time::timeout(limit, inner) },
            None => Deadline::Unlimited { future: inner },
        };
        Observed { inner, span, done }
    }
}

/// What [`Observed`] does once the response is there.
#[derive(Debug)]
struct Finish {
    id: axum::http::HeaderValue,
    route: Option<MatchedPath>,
    method: axum::http::Method,
    start: std::time::Instant,
    limit: Option<Duration>,
    /// Whose request it is, to count a refusal by the handler.
    principal: Option<std::sync::Arc<crate::auth::Principal>>,
}

/// A request whose credential is verified first (boxed: rare).
type Slow<E> = std::pin::Pin<
    Box<dyn Future<Output = Result<Result<axum::response::Response, E>, tokio::time::error::Elapsed>> + Send>,
>;

pin_project_lite::pin_project! {
    /// The inner future, with or without a deadline; or the answer of the
    /// gate or the header limit; or the inner future after a credential is
    /// verified.
    #[project = DeadlineProjection]
    enum Deadline<F, E> {
        Limited { #[pin] future: tokio::time::Timeout<F> },
        Unlimited { #[pin] future: F },
        Refused { response: Option<axum::response::Response> },
        Verifying { future: Slow<E> },
    }
}

pin_project_lite::pin_project! {
    /// The future of a request through [`Observe`]: runs the inner one in
    /// the request's span until its deadline (then [`past_deadline`]), echoes the request
    /// id and records the request's metrics. A named type rather than a box:
    /// measured with `scripts/bench.sh queries`, the box and the move into it
    /// were a visible part of an answer served from memory.
    pub struct Observed<F, E> {
        #[pin]
        inner: Deadline<F, E>,
        span: tracing::Span,
        done: Option<Finish>,
    }
}

impl<F, E> std::fmt::Debug for Observed<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").field("done", &self.done).finish_non_exhaustive()
    }
}

impl<F, E> Future for Observed<F, E>
where
    F: Future<Output = Result<axum::response::Response, E>>,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let outcome = match this.inner.project() {
            DeadlineProjection::Limited { future } => std::task::ready!(future.poll(cx)),
            DeadlineProjection::Unlimited { future } => Ok(std::task::ready!(future.poll(cx))),
            DeadlineProjection::Refused { response } => Ok(Ok(response.take().expect("polled after completion"))),
            DeadlineProjection::Verifying { future } => std::task::ready!(future.as_mut().poll(cx)),
        };
        let Finish { id, route, method, start, limit, principal } = this.done.take().expect("polled after completion");
        let mut response = match outcome {
            Ok(result) => result?,
            Err(_elapsed) => past_deadline(limit.unwrap_or_default()),
        };
        if let Some(principal) = principal {
            crate::auth::gate::observe_refusal(&principal, response.status());
        }
        response.headers_mut().insert(REQUEST_ID, id);
        let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        crate::metrics::record_request(route, method.as_str(), response.status(), start.elapsed());
        std::task::Poll::Ready(Ok(response))
    }
}

/// The answer to a request that did not finish within `limit`: 503 (the
/// service, or what it waits for, is not keeping up; the client should try
/// again), never a hang. A command may still have taken effect: a retry with
/// the same `Idempotency-Key` tells.
fn past_deadline(limit: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    let detail = format!(
        "the request did not complete within {} ms; retry later (a command retried with the same Idempotency-Key is applied at most once)",
        limit.as_millis()
    );
    let mut response = crate::problem::Problem::new(StatusCode::SERVICE_UNAVAILABLE, "deadline-exceeded", detail).into_response();
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// 431: the request's headers are larger than the limit.
fn headers_too_large(size: usize, limit: usize) -> axum::response::Response {
    use axum::response::IntoResponse;
    let detail = format!("the request headers are {size} bytes; at most {limit} are accepted");
    crate::problem::Problem::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large", detail).into_response()
}

/// The first value of each of `names`, in one pass over `headers`: a request
/// has few headers, and each `HeaderMap::get` hashes the name and probes
/// (about 225 instructions by callgrind, as many for a miss).
pub fn first_values<const N: usize>(headers: &HeaderMap, names: [&HeaderName; N]) -> [Option<HeaderValue>; N] {
    let mut found = [const { None }; N];
    for (name, value) in headers {
        if let Some(i) = names.iter().position(|n| *n == name) {
            found[i].get_or_insert_with(|| value.clone());
        }
    }
    found
}

/// A request id unique in this process and, by its random prefix, across
/// processes: `{16 hex digits}-{16 hex digits of a counter}`. Cheaper than a
/// random UUID per request (no system call); the prefix is formatted once.
fn next_request_id() -> HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    /// `n` as 16 hex digits into `out`.
    fn hex(n: u64, out: &mut [u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, digit) in out[..16].iter_mut().enumerate() {
            *digit = HEX[((n >> ((15 - i) * 4)) & 0xf) as usize];
        }
    }
    static PREFIX: std::sync::LazyLock<[u8; 17]> = std::sync::LazyLock::new(|| {
        let mut prefix = [b'-'; 17];
        hex(uuid::Uuid::new_v4().as_u64_pair().0, &mut prefix);
        prefix
    });
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut id = [0u8; 33];
    id[..17].copy_from_slice(&*PREFIX);
    hex(NEXT.fetch_add(1, Ordering::Relaxed), &mut id[17..]);
    HeaderValue::from_bytes(&id).expect("hex is a valid header")
}

/// Serves until `shutdown` is cancelled, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::{CORRELATION_ID, REQUEST_ID, first_values, next_request_id};
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn first_values_finds_each_name_once_and_keeps_the_first() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("h"));
        headers.append(REQUEST_ID, HeaderValue::from_static("first"));
        headers.append(REQUEST_ID, HeaderValue::from_static("second"));
        let [id, correlation] = first_values(&headers, [&REQUEST_ID, &CORRELATION_ID]);
        assert_eq!(id.as_ref().map(|v| v.as_bytes()), Some(&b"first"[..]));
        assert_eq!(correlation, None);
    }

    #[test]
    fn request_ids_share_the_process_prefix_and_count_up() {
        let (a, b) = (next_request_id(), next_request_id());
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_eq!(a.len(), 33);
        assert_eq!(&a[..17], &b[..17]);
        assert_eq!(a.as_bytes()[16], b'-');
        let count = |id: &str| u64::from_str_radix(&id[17..], 16).unwrap();
        assert!(count(b) > count(a));
        assert!(a[..16].bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
