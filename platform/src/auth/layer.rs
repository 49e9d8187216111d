//! The middleware: authenticates the request, checks the route's roles and
//! the principal's rate limit, hands the [`Principal`] to the handler (as a
//! request extension), and counts and logs every refusal by principal
//! (401, 403, 409, 422, 429).
//!
//! Applied with `Router::layer`, so that it runs inside the routing (the
//! route template is known) for every route, documented or not. A request
//! whose credential is cached costs a SHA-256 of the header and a cache
//! probe, and no allocation but the request's own (the future is a named
//! type, not a box); only a credential seen for the first time takes the
//! boxed path that asks PostgreSQL or checks a signature.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{IntCounterVec, Opts};

use super::authenticator::AuthError;
use super::rules::Required;
use super::{Authenticator, Principal, Roles, Rules};
use crate::problem::Problem;

/// Refused requests by principal and status: who is knocking at the wrong
/// door, and who sends commands the domain refuses.
pub static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new("erp_http_refused_total", "Requests refused (401, 403, 409, 422, 429) by principal and status"),
        &["principal", "status"],
    )
    .expect("valid metric");
    crate::metrics::REGISTRY.register(Box::new(counter.clone())).expect("metric names are unique");
    counter
});

/// Applies [`Auth`]; `None`: authentication is off, every request is
/// [`Principal::anonymous`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    shared: Option<Arc<Shared>>,
    anonymous: Arc<Principal>,
}

#[derive(Debug)]
struct Shared {
    authenticator: Arc<Authenticator>,
    rules: Rules,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>, rules: Rules) -> Self {
        Self { shared: Some(Arc::new(Shared { authenticator, rules })), anonymous: Arc::new(Principal::anonymous()) }
    }

    /// Authentication off (development, and tests of a service's own routes).
    pub fn off() -> Self {
        Self { shared: None, anonymous: Arc::new(Principal::anonymous()) }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, shared: self.shared.clone(), anonymous: self.anonymous.clone() }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
    anonymous: Arc<Principal>,
}

type Boxed = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> tower::Service<Request<Body>> for Auth<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Authorized<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let Some(shared) = &self.shared else {
            request.extensions_mut().insert(self.anonymous.clone());
            return Authorized::Inner { future: self.inner.call(request), principal: None };
        };
        let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
        let Required::OneOf(roles) = shared.rules.required(request.method(), route, request.uri().path()) else {
            return Authorized::Inner { future: self.inner.call(request), principal: None };
        };
        let credential = match bearer(request.headers().get(header::AUTHORIZATION)) {
            Ok(credential) => credential,
            Err(e) => return Authorized::Ready { response: Some(unauthorized(&e)) },
        };
        match shared.authenticator.cached(credential) {
            Some(Ok(principal)) => match refusal(&principal, roles) {
                None => {
                    request.extensions_mut().insert(principal.clone());
                    Authorized::Inner { future: self.inner.call(request), principal: Some(principal) }
                }
                refused => Authorized::Ready { response: refused },
            },
            Some(Err(e)) => Authorized::Ready { response: Some(unauthorized(&e)) },
            None => {
                let credential = credential.to_owned();
                let shared = shared.clone();
                // The clone that is ready goes into the future (tower's rule).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Authorized::Boxed {
                    future: Box::pin(async move {
                        let principal = match shared.authenticator.verify(&credential).await {
                            Ok(principal) => principal,
                            Err(e) => return Ok(unauthorized(&e)),
                        };
                        if let Some(refused) = refusal(&principal, roles) {
                            return Ok(refused);
                        }
                        request.extensions_mut().insert(principal.clone());
                        let response = inner.call(request).await?;
                        observe_refusal(&principal, response.status());
                        Ok(response)
                    }),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a request through [`Auth`].
    #[project = AuthorizedProjection]
    pub enum Authorized<F> {
        Inner { #[pin] future: F, principal: Option<Arc<Principal>> },
        Ready { response: Option<Response> },
        Boxed { future: Boxed },
    }
}

impl<F> std::fmt::Debug for Authorized<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorized")
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Authorized<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthorizedProjection::Inner { future, principal } => {
                let response = std::task::ready!(future.poll(cx))?;
                if let Some(principal) = principal {
                    observe_refusal(principal, response.status());
                }
                Poll::Ready(Ok(response))
            }
            AuthorizedProjection::Ready { response } => Poll::Ready(Ok(response.take().expect("polled after completion"))),
            AuthorizedProjection::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

/// The credential of an `Authorization: Bearer <credential>` header.
fn bearer(value: Option<&HeaderValue>) -> Result<&str, AuthError> {
    let value = value.ok_or(AuthError::Missing)?.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, credential) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(credential.trim())
}

/// The 403 or 429 for a principal without one of `roles` or beyond its
/// rate; `None`: it may go on.
fn refusal(principal: &Principal, roles: Roles) -> Option<Response> {
    if !principal.roles.intersects(roles) {
        let needed = roles.names();
        let detail = format!("this operation needs the role {}; the credential has {}", needed.join(" or "), describe(principal.roles));
        tracing::info!(principal = %principal.actor(), needed = %needed.join(","), "refused: missing role");
        REFUSED.with_label_values(&[&principal.actor(), "403"]).inc();
        return Some(
            Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
                .with("required_roles", needed)
                .with("principal", principal.actor())
                .into_response(),
        );
    }
    if let Err(wait) = principal.limiter.check() {
        let seconds = wait.as_secs() + 1;
        tracing::info!(principal = %principal.actor(), "refused: rate limit");
        REFUSED.with_label_values(&[&principal.actor(), "429"]).inc();
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("{} sends more requests than its rate allows; retry after {seconds} s", principal.actor()),
        )
        .with("principal", principal.actor())
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Some(response);
    }
    None
}

fn describe(roles: Roles) -> String {
    if roles.is_empty() { "none".into() } else { roles.names().join(", ") }
}

/// A refusal by the handler (403 out of scope, 409 a broken rule, 422 bad
/// input) counted and logged with the principal.
fn observe_refusal(principal: &Principal, status: StatusCode) {
    if matches!(status.as_u16(), 403 | 409 | 422) {
        tracing::info!(principal = %principal.actor(), status = status.as_u16(), "refused");
        REFUSED.with_label_values(&[&principal.actor(), status.as_str()]).inc();
    }
}

/// 401 with `WWW-Authenticate` (RFC 6750), or 503 when credentials cannot
/// be checked now. Never echoes the credential.
fn unauthorized(error: &AuthError) -> Response {
    if let AuthError::Unavailable = error {
        let mut response = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string()).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    REFUSED.with_label_values(&["unauthenticated", "401"]).inc();
    let challenge = match error {
        AuthError::Missing => HeaderValue::from_static(r#"Bearer realm="erp-stock""#),
        _ => HeaderValue::from_static(r#"Bearer realm="erp-stock", error="invalid_token""#),
    };
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", error.to_string()).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_header_carries_a_credential() {
        let value = |v: &'static str| HeaderValue::from_static(v);
        assert_eq!(bearer(Some(&value("Bearer abc"))).unwrap(), "abc");
        assert_eq!(bearer(Some(&value("bearer  abc "))).unwrap(), "abc");
        assert!(matches!(bearer(None), Err(AuthError::Missing)));
        assert!(matches!(bearer(Some(&value("Basic abc"))), Err(AuthError::NotBearer)));
        assert!(matches!(bearer(Some(&value("Bearer "))), Err(AuthError::NotBearer)));
    }
}
