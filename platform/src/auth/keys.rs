//! API keys: `erp_<id>_<secret>`, where `id` is 8 hex digits shown in lists
//! and logs and `secret` is 256 random bits (base64url). Only the SHA-256 of
//! the whole key is stored; the key itself is shown once, at creation.
//! Revoking a key notifies every instance on [`REVOKED_CHANNEL`].

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::Roles;

/// The PostgreSQL `NOTIFY` channel a revocation is announced on; the payload is the key's id.
pub const REVOKED_CHANNEL: &str = "erp_api_key_revoked";

const PREFIX: &str = "erp_";

/// The SHA-256 of a key, what the table stores.
pub type KeyHash = [u8; 32];

/// A key as it is stored, without its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyRecord {
    /// The visible part of the key.
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    /// `None`: every warehouse.
    pub warehouses: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// Whether it authenticates at `now`.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// What is wrong with a key to be created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("name: {0}")]
    Name(&'static str),
    #[error("a key named {0:?} exists (names stay taken after revocation: they name a client in the audit trail)")]
    NameTaken(String),
    #[error("role: {0}")]
    Role(#[from] super::UnknownRole),
    #[error("a key needs at least one role")]
    NoRole,
    #[error("warehouse: {0:?} is not a warehouse id (letters, digits, '-', '_', '.', at most 40)")]
    Warehouse(String),
    #[error("not an API key of this system")]
    Format,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A new random key: 32 bytes from the operating system's generator.
pub fn generate() -> String {
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).expect("the operating system's random generator");
    getrandom::fill(&mut secret).expect("the operating system's random generator");
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret))
}

/// The id of a well-formed key, `None` for anything else (checked before any
/// lookup, so that garbage costs no database round trip).
pub fn id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == 8
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 43
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(id)
}

/// The stored form of a key.
pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// What `keys create` asks for.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub roles: Vec<String>,
    pub warehouses: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stores `key` (from [`generate`], or a fixed one in tests) for `new`.
pub async fn insert(pool: &PgPool, key: &str, new: &NewKey) -> Result<KeyRecord, KeyError> {
    let id = id_of(key).ok_or(KeyError::Format)?;
    let name = new.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(KeyError::Name("1 to 100 characters"));
    }
    if name.chars().any(|c| c.is_control() || c == ':') {
        return Err(KeyError::Name("no control characters and no ':'"));
    }
    let roles = Roles::parse(new.roles.iter().flat_map(|r| r.split(',')).map(str::trim).filter(|r| !r.is_empty()))?;
    if roles.is_empty() {
        return Err(KeyError::NoRole);
    }
    let warehouses: Vec<String> = new.warehouses.iter().flat_map(|w| w.split(',')).map(str::trim).filter(|w| !w.is_empty()).map(str::to_owned).collect();
    if let Some(bad) = warehouses.iter().find(|w| {
        w.len() > 40 || !w.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }) {
        return Err(KeyError::Warehouse(bad.clone()));
    }
    let roles: Vec<&str> = roles.names();
    let warehouses = (!warehouses.is_empty()).then_some(warehouses);
    sqlx::query_as(
        "insert into api_keys (id, name, secret_hash, roles, warehouses, expires_at) values ($1, $2, $3, $4, $5, $6)
         returning id, name, roles, warehouses, created_at, expires_at, revoked_at",
    )
    .bind(id)
    .bind(name)
    .bind(&hash(key)[..])
    .bind(&roles)
    .bind(&warehouses)
    .bind(new.expires_at)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("api_keys_name_key") => KeyError::NameTaken(name.to_owned()),
        _ => KeyError::Database(e),
    })
}

/// Creates a key: returns it (to be shown once) and its record.
pub async fn create(pool: &PgPool, new: &NewKey) -> Result<(String, KeyRecord), KeyError> {
    let key = generate();
    let record = insert(pool, &key, new).await?;
    Ok((key, record))
}

/// Every key, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<KeyRecord>, sqlx::Error> {
    sqlx::query_as("select id, name, roles, warehouses, created_at, expires_at, revoked_at from api_keys order by created_at desc, id")
        .fetch_all(pool)
        .await
}

/// Revokes the key with this id or name and tells every instance; `None`
/// when there is no such key, its record when there is (revoked now or before).
pub async fn revoke(pool: &PgPool, id_or_name: &str) -> Result<Option<KeyRecord>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let record: Option<KeyRecord> = sqlx::query_as(
        "update api_keys set revoked_at = coalesce(revoked_at, now()) where id = $1 or name = $1
         returning id, name, roles, warehouses, created_at, expires_at, revoked_at",
    )
    .bind(id_or_name)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(record) = &record {
        // Delivered at commit, to every session listening.
        sqlx::query("select pg_notify($1, $2)").bind(REVOKED_CHANNEL).bind(&record.id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(record)
}

/// The record of the key with this hash, valid or not.
pub async fn find(pool: &PgPool, hash: &KeyHash) -> Result<Option<KeyRecord>, sqlx::Error> {
    sqlx::query_as("select id, name, roles, warehouses, created_at, expires_at, revoked_at from api_keys where secret_hash = $1")
        .bind(&hash[..])
        .fetch_optional(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_distinct_and_carry_their_id() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        let id = id_of(&a).expect("well formed");
        assert!(a.starts_with(&format!("erp_{id}_")));
        assert_eq!(a.len(), 4 + 8 + 1 + 43);
        assert_ne!(hash(&a), hash(&b));
        for bad in ["", "erp_", "Bearer x", "erp_1234567_aaaa", &a[..a.len() - 1], &format!("{a}x"), &a.replace("erp_", "pre_")] {
            assert_eq!(id_of(bad), None, "{bad}");
        }
    }
}
