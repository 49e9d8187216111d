//! The gate every request passes: authenticates it, checks the route's
//! roles and the principal's rate limit, hands the [`Principal`] to the
//! handler (as a request extension), and counts and logs every refusal by
//! principal (401, 403, 409, 422, 429).
//!
//! It is not a layer of its own: `platform::http`'s one request layer
//! (`Observe`) calls it, inside the routing (the route template is known).
//! Measured with `scripts/bench.sh queries`, a separate layer per route cost
//! about 10 % of an answer served from memory (axum boxes and clones every
//! route layer per request); inside `Observe` a request whose credential is
//! cached costs a cache probe, a comparison and the rate check, and only a
//! credential seen for the first time takes a boxed path that asks
//! PostgreSQL or checks a signature.

use std::sync::{Arc, LazyLock};

use axum::body::Body;
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

/// Authentication and authorisation of a service's requests; [`Gate::off`]:
/// every request is [`Principal::anonymous`].
#[derive(Debug, Clone)]
pub struct Gate {
    shared: Option<Arc<Shared>>,
    anonymous: Arc<Principal>,
}

#[derive(Debug)]
struct Shared {
    authenticator: Arc<Authenticator>,
    rules: Rules,
}

/// What becomes of a request at the gate.
#[derive(Debug)]
pub enum Admission {
    /// Let through; the principal (if any) is in the request's extensions.
    Go(Option<Arc<Principal>>),
    /// Answered here: 401, 403, 429 (or 503 when credentials cannot be checked).
    Refused(Response),
    /// A credential not seen yet: [`Gate::verify`] it, needing one of these roles.
    Verify(String, Roles),
}

/// A service's authentication as it starts: the authenticator (its
/// revocation listener running) with the settings, or off. Turned into the
/// [`Gate`] once the service's OpenAPI document is known ([`Access::gate`]).
#[derive(Debug)]
pub struct Access {
    on: Option<(Arc<Authenticator>, String)>,
}

impl Access {
    /// Starts authentication by `settings` on `pool` (warns when it is off).
    pub fn start(pool: sqlx::PgPool, settings: &super::AuthSettings, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<Self> {
        if !settings.enabled {
            tracing::warn!("authentication is off (APP_AUTH__ENABLED=false): every request may do everything");
            return Ok(Self::off());
        }
        let authenticator = Arc::new(Authenticator::new(pool, settings)?);
        authenticator.listen_for_revocations(shutdown);
        Ok(Self { on: Some((authenticator, settings.public_paths.clone())) })
    }

    /// Authentication off.
    pub fn off() -> Self {
        Self { on: None }
    }

    /// Declares the security scheme and its answers in `doc` and builds the
    /// gate from the roles its operations list.
    pub fn gate(self, doc: &mut utoipa::openapi::OpenApi) -> Gate {
        super::rules::declare(doc);
        match self.on {
            Some((authenticator, public_paths)) => {
                Gate::new(authenticator, Rules::from_openapi(doc, &public_paths).expect("every operation declares its roles"))
            }
            None => Gate::off(),
        }
    }
}

impl Gate {
    pub fn new(authenticator: Arc<Authenticator>, rules: Rules) -> Self {
        Self { shared: Some(Arc::new(Shared { authenticator, rules })), anonymous: Arc::new(Principal::anonymous()) }
    }

    /// Authentication off (development, and tests of a service's own routes).
    pub fn off() -> Self {
        Self { shared: None, anonymous: Arc::new(Principal::anonymous()) }
    }

    /// Decides a request to `route` (its template; `None` when no route
    /// matched) without waiting, when it can.
    pub fn admit(&self, request: &mut Request<Body>, route: Option<&str>) -> Admission {
        let Some(shared) = &self.shared else {
            request.extensions_mut().insert(self.anonymous.clone());
            return Admission::Go(None);
        };
        let Required::OneOf(roles) = shared.rules.required(request.method(), route, request.uri().path()) else {
            return Admission::Go(None);
        };
        let credential = match bearer(request.headers().get(header::AUTHORIZATION)) {
            Ok(credential) => credential,
            Err(e) => return Admission::Refused(unauthorized(&e)),
        };
        match shared.authenticator.cached(credential) {
            Some(Ok(principal)) => match refusal(&principal, roles) {
                None => {
                    request.extensions_mut().insert(principal.clone());
                    Admission::Go(Some(principal))
                }
                Some(refused) => Admission::Refused(refused),
            },
            Some(Err(e)) => Admission::Refused(unauthorized(&e)),
            None => Admission::Verify(credential.to_owned(), roles),
        }
    }

    /// The principal of a credential not in the cache, or the answer that
    /// refuses it.
    pub async fn verify(&self, credential: &str, roles: Roles) -> Result<Arc<Principal>, Response> {
        let shared = self.shared.as_ref().expect("only an enabled gate asks to verify");
        let principal = shared.authenticator.verify(credential).await.map_err(|e| unauthorized(&e))?;
        match refusal(&principal, roles) {
            None => Ok(principal),
            Some(refused) => Err(refused),
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
pub fn observe_refusal(principal: &Principal, status: StatusCode) {
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
