//! From an `Authorization: Bearer ...` header to a [`Principal`].
//!
//! A verified credential is cached in memory, keyed by the credential
//! itself, so that a request costs a hash probe and a string comparison, not
//! a database round trip or a signature check (keying by its SHA-256 instead
//! cost a visible share of a request served from memory). The cache lives
//! as long as the process and holds only what clients sent it; the database
//! holds hashes only. An API key is trusted from the
//! cache for at most `key_cache_secs`; a revocation reaches every instance
//! sooner, through PostgreSQL's `NOTIFY` on [`keys::REVOKED_CHANNEL`], which
//! empties the cache (revocations are rare; the next request of each client
//! asks PostgreSQL once). An instance that lost its listening connection
//! empties the cache when it is back, since it may have missed one. A token
//! is cached until its `exp`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::jwt::{JwtError, JwtVerifier};
use super::keys;
use super::limit::Limits;
use super::{AuthSettings, AuthType, Principal, Roles};

/// Why a request is not authenticated (401).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("an Authorization: Bearer credential is required")]
    Missing,
    #[error("the Authorization header is not a Bearer credential")]
    NotBearer,
    #[error("the API key is unknown, revoked or expired")]
    InvalidKey,
    #[error("the token is not valid: {0}")]
    InvalidToken(String),
    /// PostgreSQL cannot be asked about a key not in the cache (503, not 401:
    /// the client did nothing wrong).
    #[error("credentials cannot be checked now")]
    Unavailable,
}

/// A cached verdict on one credential.
#[derive(Debug, Clone)]
struct Verdict {
    /// `None`: the credential is unknown or revoked.
    principal: Option<Arc<Principal>>,
    /// Trusted until then.
    until: Instant,
}

/// Verifies credentials, with the cache and the revocation listener.
#[derive(Debug)]
pub struct Authenticator {
    pool: PgPool,
    verdicts: quick_cache::sync::Cache<Box<str>, Verdict>,
    key_ttl: Duration,
    limits: Limits,
    jwt: Option<JwtVerifier>,
}

/// How many verdicts are kept; a verdict is a few hundred bytes.
const CACHED_VERDICTS: usize = 100_000;

impl Authenticator {
    pub fn new(pool: PgPool, settings: &AuthSettings) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            verdicts: quick_cache::sync::Cache::new(CACHED_VERDICTS),
            key_ttl: Duration::from_secs(settings.key_cache_secs),
            limits: Limits::parse(&settings.rate_limits, settings.rate_burst_secs)?,
            jwt: JwtVerifier::new(&settings.jwt)?,
        })
    }

    /// The principal of a credential, from the cache when it is there and
    /// still valid: the path of almost every request, without an await.
    pub fn cached(&self, credential: &str) -> Option<Result<Arc<Principal>, AuthError>> {
        let verdict = self.verdicts.get(credential)?;
        let now = Instant::now();
        if verdict.until <= now {
            return None;
        }
        Some(match verdict.principal {
            Some(p) if p.expires_at.is_none_or(|e| e > Utc::now()) => Ok(p),
            Some(_) => Err(self.refusal(credential)),
            None => Err(self.refusal(credential)),
        })
    }

    fn refusal(&self, credential: &str) -> AuthError {
        if keys::id_of(credential).is_some() { AuthError::InvalidKey } else { AuthError::InvalidToken("expired".into()) }
    }

    /// Verifies a credential: an API key against PostgreSQL, anything else
    /// as a JWT (when tokens are configured). Caches the verdict.
    pub async fn verify(&self, credential: &str) -> Result<Arc<Principal>, AuthError> {
        if let Some(cached) = self.cached(credential) {
            return cached;
        }
        let hash = keys::hash(credential);
        let key: Box<str> = credential.into();
        if keys::id_of(credential).is_some() {
            let record = keys::find(&self.pool, &hash).await.map_err(|e| {
                tracing::warn!(error = %e, "cannot look up an API key");
                AuthError::Unavailable
            })?;
            let principal = record.filter(|r| r.is_valid_at(Utc::now())).map(|r| {
                let roles = Roles::parse(r.roles.iter().map(String::as_str)).unwrap_or_default();
                self.principal(AuthType::ApiKey, r.name, roles, r.warehouses, r.expires_at)
            });
            self.verdicts.insert(key, Verdict { principal: principal.clone(), until: Instant::now() + self.key_ttl });
            return principal.ok_or(AuthError::InvalidKey);
        }
        let Some(jwt) = &self.jwt else {
            return Err(AuthError::InvalidKey);
        };
        let claims = jwt.verify(credential).await.map_err(|e| match e {
            JwtError::Fetch(_) => AuthError::Unavailable,
            e => AuthError::InvalidToken(e.to_string()),
        })?;
        let expires = claims.expires_at;
        let principal = self.principal(AuthType::User, claims.subject, claims.roles, claims.warehouses, Some(expires));
        // Trusted until it expires (the check per request compares `exp`).
        self.verdicts.insert(key, Verdict { principal: Some(principal.clone()), until: Instant::now() + Duration::from_secs(3600) });
        Ok(principal)
    }

    fn principal(
        &self,
        auth_type: AuthType,
        id: String,
        roles: Roles,
        warehouses: Option<Vec<String>>,
        expires_at: Option<chrono::DateTime<Utc>>,
    ) -> Arc<Principal> {
        let limiter = self.limits.limiter(&format!("{}:{id}", auth_type.as_str()), roles);
        Arc::new(Principal { auth_type, id, roles, warehouses, expires_at, limiter })
    }

    /// Forgets every cached verdict.
    pub fn forget(&self) {
        self.verdicts.clear();
    }

    /// Listens for revocations until `shutdown`, forgetting the cache on
    /// each one and after every reconnection.
    pub fn listen_for_revocations(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let listened = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = this.listen() => result,
                };
                if let Err(e) = listened {
                    tracing::warn!(error = %e, "revocation listener lost; reconnecting");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    }

    async fn listen(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(keys::REVOKED_CHANNEL).await?;
        // A revocation may have come while nobody listened.
        self.forget();
        loop {
            match listener.try_recv().await? {
                Some(notification) => {
                    tracing::info!(key = notification.payload(), "an API key was revoked; forgetting cached credentials");
                }
                // Reconnected on the next call; what came meanwhile is lost.
                None => tracing::warn!("revocation listener reconnecting; forgetting cached credentials"),
            }
            self.forget();
        }
    }
}
