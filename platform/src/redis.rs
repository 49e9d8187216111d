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

    /// The channel on which the projector publishes invalidation tags.
    pub fn invalidation_channel(&self) -> String {
        format!("{}invalidate", self.key_prefix)
    }
}
