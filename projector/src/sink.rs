//! Pushing committed documents to Redis and announcing their tags.
//!
//! A Redis value is `"{version}\n{body}"`: the query-service splits at the first
//! newline and returns the body bytes as they are, with the version as ETag.

use platform::redis::{RedisConnection, RedisSettings};

use crate::documents::Document;

/// Writes documents to Redis; connects on first use and reconnects after failures.
#[derive(Debug)]
pub struct RedisSink {
    redis: RedisConnection,
    settings: RedisSettings,
}

/// The stored form of a document: version, newline, body.
pub fn encode(version: i64, body: &[u8]) -> Vec<u8> {
    let mut value = format!("{version}\n").into_bytes();
    value.extend_from_slice(body);
    value
}

impl RedisSink {
    pub fn new(settings: RedisSettings) -> redis::RedisResult<Self> {
        Ok(Self { redis: RedisConnection::new(&settings)?, settings })
    }

    /// Sets every document and publishes their tags, in one pipeline.
    #[tracing::instrument(skip_all, fields(documents = documents.len()), err)]
    pub async fn publish(&self, documents: &[Document]) -> redis::RedisResult<()> {
        if documents.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for doc in documents {
            pipe.set(self.settings.doc_key(&doc.key), encode(doc.version, &doc.body)).ignore();
        }
        let mut tags: Vec<&str> = documents.iter().flat_map(|d| d.tags.iter().map(String::as_str)).collect();
        tags.sort_unstable();
        tags.dedup();
        pipe.publish(self.settings.invalidation_channel(), tags.join("\n")).ignore();
        let mut connection = self.redis.get().await?;
        pipe.query_async::<()>(&mut connection).await
    }

    /// True when Redis answers PING.
    pub async fn ping(&self) -> bool {
        self.redis.ping().await
    }
}
