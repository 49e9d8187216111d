//! Who is calling, and may they: credentials (API keys, JWT bearer tokens
//! from the company's identity provider), roles, warehouse scopes and
//! per-principal rate limits. docs/security.md is the reader's guide.
//!
//! - [`keys`]: API keys, stored as hashes, created and revoked from the
//!   command line;
//! - [`jwt`]: bearer tokens checked against a JWKS or a static key;
//! - [`authenticator`]: turns an `Authorization` header into a [`Principal`],
//!   with verified credentials cached and revocations pushed to every instance;
//! - [`rules`]: the role each operation needs, read from the service's own
//!   OpenAPI document (the one place it is declared);
//! - [`gate`]: what applies all of it to every request (called by the one
//!   request layer of `platform::http`);
//! - [`limit`]: the rate limit per principal.

pub mod authenticator;
pub mod jwt;
pub mod gate;
pub mod keys;
pub mod limit;
pub mod rules;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use authenticator::Authenticator;
pub use gate::{Access, Gate};
pub use rules::Rules;

/// What a credential may do. Roles are independent: a client gets exactly
/// the ones it needs (an integration that posts movements and reads stock
/// has `writer` and `reader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The read API.
    Reader,
    /// Stock movements and reservations.
    Writer,
    /// Articles, charges, quality results, holds.
    MasterData,
    /// Stock as of a moment, exports, the audit query.
    Analyst,
    /// Keys, dead letters and re-drive, rebuilds.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Reader, Role::Writer, Role::MasterData, Role::Analyst, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::MasterData => "master-data",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Result<Role, UnknownRole> {
        Role::ALL.into_iter().find(|r| r.as_str() == name).ok_or_else(|| UnknownRole(name.to_owned()))
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`Role`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown role {0:?}; the roles are reader, writer, master-data, analyst and admin")]
pub struct UnknownRole(pub String);

/// A set of [`Role`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }

    /// Whether the two sets share a role.
    pub fn intersects(self, other: Roles) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// Names of the roles, e.g. `["reader", "writer"]`.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Role::as_str).collect()
    }

    /// Parses role names, ignoring none: an unknown name is an error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Roles, UnknownRole> {
        let mut roles = Roles::default();
        for name in names {
            roles.insert(Role::parse(name.trim())?);
        }
        Ok(roles)
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        let mut roles = Roles::default();
        for role in iter {
            roles.insert(role);
        }
        roles
    }
}

/// The CloudEvents Auth Context `authtype` of a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// A machine client with an API key.
    ApiKey,
    /// A person, from a token of the identity provider.
    User,
    /// A service account of the identity provider.
    ServiceAccount,
    /// Authentication is switched off (development and in-process tests only).
    Unauthenticated,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::ApiKey => "api_key",
            AuthType::User => "user",
            AuthType::ServiceAccount => "service_account",
            AuthType::Unauthenticated => "unauthenticated",
        }
    }
}

/// A verified caller: what the request may do and who it is recorded as.
#[derive(Debug)]
pub struct Principal {
    pub auth_type: AuthType,
    /// The CloudEvents `authid`: the key's name or the token's subject.
    pub id: String,
    pub roles: Roles,
    /// The warehouses it may act in; `None`: every one.
    pub warehouses: Option<Vec<String>>,
    /// When the credential stops being valid.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Its rate limit, shared by every credential of the same principal.
    pub(crate) limiter: Arc<limit::Limiter>,
}

impl Principal {
    /// How events record it: `{authtype}:{authid}`, e.g. `api_key:scanner-7`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.auth_type.as_str(), self.id)
    }

    /// The principal of every request when authentication is off.
    pub fn anonymous() -> Self {
        Self {
            auth_type: AuthType::Unauthenticated,
            id: "anonymous".into(),
            roles: Role::ALL.into_iter().collect(),
            warehouses: None,
            expires_at: None,
            limiter: Arc::new(limit::Limiter::unlimited()),
        }
    }
}

/// Authentication and authorisation settings (`APP_AUTH__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthSettings {
    /// Require a credential on every API route. Off only for development:
    /// every request is then `unauthenticated:anonymous` with every role.
    pub enabled: bool,
    /// Paths answered without a credential (exact matches), comma-separated.
    pub public_paths: String,
    /// How long a verified API key is trusted without asking PostgreSQL
    /// again, in seconds: the bound on a revocation when the instance missed
    /// its notification (normally it arrives within milliseconds).
    pub key_cache_secs: u64,
    /// Requests per second per principal, by role, as `role=rate`
    /// comma-separated; a principal with several roles gets the highest of
    /// their rates, a role not listed or with 0 has no limit. Per instance:
    /// behind N instances a client can reach N times the rate.
    pub rate_limits: String,
    /// How many requests beyond the rate a principal may send at once, as
    /// seconds' worth of its rate.
    pub rate_burst_secs: f64,
    /// Bearer tokens of the identity provider (OpenID Connect).
    pub jwt: jwt::JwtSettings,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            public_paths: "/health/live,/health/ready,/metrics,/openapi.json".into(),
            key_cache_secs: 30,
            rate_limits: "reader=2000,writer=1000,master-data=200,analyst=50,admin=50".into(),
            rate_burst_secs: 1.0,
            jwt: jwt::JwtSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print_by_their_names() {
        let roles = Roles::parse(["writer", " reader"]).unwrap();
        assert_eq!(roles.names(), ["reader", "writer"]);
        assert!(roles.contains(Role::Writer) && !roles.contains(Role::Admin));
        assert!(Roles::parse(["root"]).is_err());
        assert!(roles.intersects([Role::Reader].into_iter().collect()));
        assert!(!roles.intersects([Role::Admin, Role::Analyst].into_iter().collect()));
    }
}
