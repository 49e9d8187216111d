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
    /// The Redis key of a read-model document, e.g. `erp:doc:stock:ART-1`.
    pub fn doc_key(&self, doc: &str) -> String {
        format!("{}doc:{doc}", self.key_prefix)
    }

    /// The channel on which the projector publishes invalidation tags, one per line.
    pub fn invalidation_channel(&self) -> String {
        format!("{}invalidate", self.key_prefix)
    }
}

/// The cache tags of a read-model document, from its key: `stock:ART-1`
/// belongs to `article:ART-1`. The projector publishes these tags when it
/// rewrites a document; the query-services drop cached entries by them.
pub fn document_tags(key: &str) -> Vec<String> {
    match key.split_once(':') {
        Some(("stock", article)) => vec![format!("article:{article}")],
        _ => vec![key.to_owned()],
    }
}

/// A Redis connection made on first use and re-made after failures, with short
/// timeouts: a down Redis costs a caller half a second at most, never a hang.
pub struct RedisConnection {
    client: ::redis::Client,
    connection: tokio::sync::Mutex<Option<::redis::aio::ConnectionManager>>,
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
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(std::time::Duration::from_millis(500)))
            .set_response_timeout(Some(std::time::Duration::from_millis(1000)));
        let c = ::redis::aio::ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// True when Redis answers PING.
    pub async fn ping(&self) -> bool {
        match self.get().await {
            Ok(mut c) => ::redis::cmd("PING").query_async::<String>(&mut c).await.is_ok(),
            Err(_) => false,
        }
    }
}
