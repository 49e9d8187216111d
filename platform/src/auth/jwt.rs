//! Bearer tokens from the company's identity provider (OpenID Connect): the
//! signature is checked with `jsonwebtoken` against the provider's JWKS
//! (fetched, cached, fetched again on an unknown `kid` at most once per
//! `jwks_refetch_secs`) or against a configured static public key; `iss`,
//! `aud`, `exp` and `nbf` are checked; the roles come from a configured claim.
//! Only asymmetric algorithms are accepted: a token signed with HMAC (for
//! instance with the provider's public key as the secret) or with
//! `alg: none` is refused before any key is looked at.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::Roles;

/// `APP_AUTH__JWT__*`. Tokens are accepted when `issuer` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JwtSettings {
    /// The `iss` every token must carry; empty: tokens are not accepted.
    pub issuer: String,
    /// The `aud` every token must carry (this API's client id at the provider).
    pub audience: String,
    /// Where the provider publishes its signing keys (`jwks_uri` of its
    /// OpenID configuration). Either this or `static_key`.
    pub jwks_url: String,
    /// A PEM public key (RSA, EC or Ed25519) to check every token with,
    /// instead of a JWKS; set it from a file with `APP_AUTH__JWT__STATIC_KEY_FILE`.
    pub static_key: String,
    /// Accepted signature algorithms, comma-separated (asymmetric only).
    pub algorithms: String,
    /// The claim holding the roles: a list of role names or one
    /// space-separated string; a dotted path reaches into objects
    /// (`realm_access.roles`). Names that are no role here are ignored.
    pub roles_claim: String,
    /// The claim limiting the warehouses (a list); absent: every warehouse.
    pub warehouses_claim: String,
    /// Fetch the JWKS again for an unknown `kid` at most this often, in seconds.
    pub jwks_refetch_secs: u64,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: "erp-stock".into(),
            jwks_url: String::new(),
            static_key: String::new(),
            algorithms: "RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,EdDSA".into(),
            roles_claim: "roles".into(),
            warehouses_claim: "warehouses".into(),
            jwks_refetch_secs: 60,
            leeway_secs: 30,
        }
    }
}

/// Why a token is refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("{0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    #[error("no signing key with kid {0:?}")]
    UnknownKey(String),
    #[error("the token names no kid")]
    NoKid,
    #[error("claim {0} is missing or not a string")]
    Claim(&'static str),
    /// The JWKS cannot be fetched.
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct Claims {
    pub subject: String,
    pub roles: Roles,
    pub warehouses: Option<Vec<String>>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Checks tokens.
#[derive(Debug)]
pub struct JwtVerifier {
    settings: JwtSettings,
    validation: Validation,
    keys: Keys,
}

#[derive(Debug)]
enum Keys {
    Static(Box<DecodingKey>),
    Jwks { url: String, client: reqwest::Client, set: Mutex<Fetched> },
}

#[derive(Debug, Default)]
struct Fetched {
    keys: HashMap<String, DecodingKey>,
    /// When they were last asked for.
    at: Option<Instant>,
}

impl JwtVerifier {
    /// `None` when tokens are not configured.
    pub fn new(settings: &JwtSettings) -> anyhow::Result<Option<Self>> {
        if settings.issuer.is_empty() {
            return Ok(None);
        }
        let algorithms = settings
            .algorithms
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                let alg: Algorithm = a.parse().map_err(|_| anyhow::anyhow!("APP_AUTH__JWT__ALGORITHMS: unknown algorithm {a:?}"))?;
                anyhow::ensure!(
                    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512),
                    "APP_AUTH__JWT__ALGORITHMS: {a} is symmetric; only the provider's public keys are trusted"
                );
                Ok(alg)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!algorithms.is_empty(), "APP_AUTH__JWT__ALGORITHMS is empty");
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = settings.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let keys = if !settings.static_key.trim().is_empty() {
            Keys::Static(Box::new(static_key(settings.static_key.trim().as_bytes())?))
        } else {
            anyhow::ensure!(!settings.jwks_url.is_empty(), "APP_AUTH__JWT__ISSUER is set: set APP_AUTH__JWT__JWKS_URL or APP_AUTH__JWT__STATIC_KEY too");
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            Keys::Jwks { url: settings.jwks_url.clone(), client, set: Mutex::default() }
        };
        Ok(Some(Self { settings: settings.clone(), validation, keys }))
    }

    /// Verifies a token and reads its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token)?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(JwtError::Algorithm(header.alg));
        }
        // The token's algorithm only: `jsonwebtoken` refuses a validation
        // whose algorithms are of another family than the key.
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let data = match &self.keys {
            Keys::Static(key) => jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)?,
            Keys::Jwks { url, client, set } => {
                let kid = header.kid.ok_or(JwtError::NoKid)?;
                let mut fetched = set.lock().await;
                let refetch = Duration::from_secs(self.settings.jwks_refetch_secs);
                if !fetched.keys.contains_key(&kid) && fetched.at.is_none_or(|at| at.elapsed() >= refetch) {
                    // Counted from the attempt: a provider that is down is
                    // not asked again for every token.
                    fetched.at = Some(Instant::now());
                    match fetch(client, url).await {
                        Ok(keys) => fetched.keys = keys,
                        Err(e) if fetched.keys.is_empty() => return Err(e),
                        Err(e) => tracing::warn!(error = %e, "keeping the signing keys fetched before"),
                    }
                }
                let key = fetched.keys.get(&kid).ok_or(JwtError::UnknownKey(kid))?;
                jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)?
            }
        };
        self.claims(&data.claims)
    }

    fn claims(&self, claims: &serde_json::Value) -> Result<Claims, JwtError> {
        let subject = claims.get("sub").and_then(|s| s.as_str()).filter(|s| !s.is_empty()).ok_or(JwtError::Claim("sub"))?;
        let exp = claims.get("exp").and_then(serde_json::Value::as_i64).ok_or(JwtError::Claim("exp"))?;
        let names = |value: Option<&serde_json::Value>| -> Vec<String> {
            match value {
                Some(serde_json::Value::Array(items)) => items.iter().filter_map(|i| i.as_str()).map(str::to_owned).collect(),
                Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
                _ => Vec::new(),
            }
        };
        let roles = names(claim(claims, &self.settings.roles_claim))
            .iter()
            .filter_map(|name| super::Role::parse(name).ok())
            .collect();
        let warehouses = claim(claims, &self.settings.warehouses_claim).map(|w| names(Some(w)));
        Ok(Claims {
            subject: subject.to_owned(),
            roles,
            warehouses,
            expires_at: chrono::DateTime::from_timestamp(exp, 0).unwrap_or_default(),
        })
    }
}

/// The value at a dotted path.
fn claim<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(claims, |value, part| value.get(part))
}

fn static_key(pem: &[u8]) -> anyhow::Result<DecodingKey> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|e| anyhow::anyhow!("APP_AUTH__JWT__STATIC_KEY is no RSA, EC or Ed25519 public key in PEM: {e}"))
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<HashMap<String, DecodingKey>, JwtError> {
    let fetch_error = |e: reqwest::Error| JwtError::Fetch(e.without_url().to_string());
    let response = client.get(url).send().await.map_err(fetch_error)?.error_for_status().map_err(fetch_error)?;
    let set: JwkSet = response.json().await.map_err(fetch_error)?;
    let keys = set
        .keys
        .iter()
        .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
        .collect();
    tracing::info!(url, "fetched the identity provider's signing keys");
    Ok(keys)
}
