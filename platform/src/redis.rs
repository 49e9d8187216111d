//! Redis: settings and key naming shared by the projector (writer) and the
//! query-service (reader).

use serde::{Deserialize, Serialize};

/// How a service reaches Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// Connection URL.
    pub url: String,
    /// Prepended to every key and channel, so several deployments (or tests) can
    /// share one Redis.
    pub key_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379/0".into(), key_prefix: "erp:".into() }
    }
}

impl RedisSettings {
    /// Prefix of every key of one read-model generation, e.g. `erp:g1:`.
    pub fn generation_prefix(&self, generation: i64) -> String {
        format!("{}g{generation}:", self.key_prefix)
    }

    /// The Redis key of a read-model document, e.g. `erp:g1:doc:stock:ART-1`.
    pub fn doc_key(&self, generation: i64, doc: &str) -> String {
        format!("{}doc:{doc}", self.generation_prefix(generation))
    }

    /// Set by the projector when it starts copying a generation's documents
    /// into Redis; its absence (a flush, a restarted Redis) makes it copy them again.
    pub fn synced_key(&self, generation: i64) -> String {
        format!("{}synced", self.generation_prefix(generation))
    }

    /// The serving generation, for readers that cannot reach PostgreSQL.
    pub fn active_generation_key(&self) -> String {
        format!("{}active-generation", self.key_prefix)
    }

    /// Documents most asked for, by the query-services (a sorted set), for warm-up.
    pub fn hot_keys_key(&self, generation: i64) -> String {
        format!("{}hot", self.generation_prefix(generation))
    }

    /// The channel on which the projector publishes invalidation tags, one per
    /// line; `readmodel::keys::ALL_TAG` drops everything.
    pub fn invalidation_channel(&self) -> String {
        format!("{}invalidate", self.key_prefix)
    }
}

/// A Redis connection made on first use and re-made after failures, with short
/// timeouts: a down Redis costs a caller half a second at most, never a hang.
pub struct RedisConnection {
    client: ::redis::Client,
    /// Made once (retried until it succeeds), then shared without a lock.
    connection: tokio::sync::OnceCell<::redis::aio::ConnectionManager>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection").finish_non_exhaustive()
    }
}

impl RedisConnection {
    pub fn new(settings: &RedisSettings) -> ::redis::RedisResult<Self> {
        Ok(Self { client: ::redis::Client::open(settings.url.as_str())?, connection: Default::default() })
    }

    /// A multiplexed handle; cheap to clone, reconnects by itself once made.
    pub async fn get(&self) -> ::redis::RedisResult<::redis::aio::ConnectionManager> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                let config = ::redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(Some(std::time::Duration::from_millis(500)))
                    .set_response_timeout(Some(std::time::Duration::from_millis(1000)));
                ::redis::aio::ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(connection.clone())
    }

    /// True when Redis answers PING.
    pub async fn ping(&self) -> bool {
        match self.get().await {
            Ok(mut c) => ::redis::cmd("PING").query_async::<String>(&mut c).await.is_ok(),
            Err(_) => false,
        }
    }
}
