//! Redis: the projector copies every document it commits to PostgreSQL into
//! Redis and announces the changed cache tags on the invalidation channel.
//!
//! A Redis value is `"{version}\n{body}"`: the query-service splits at the
//! first newline and returns the body bytes as they are, with the version as
//! ETag. Writes are **guarded by the version** (a Lua script keeps a stored
//! value whose version is higher), so a slow writer, a second instance or a
//! repair copying older bytes can never replace newer ones.
//!
//! Redis is a copy that converges by itself ([`repair`]): every batch's
//! document keys are recorded in `redis_outbox` in the batch's PostgreSQL
//! transaction and the row is deleted once Redis has them; rows left behind by
//! a crash or an outage are replayed. A generation's `synced` marker is set
//! before its documents are copied in full, so a flushed or restarted Redis
//! (marker gone) gets a full copy again.

use std::collections::BTreeSet;
use std::time::Duration;

use readmodel::Generation;
use platform::redis::{RedisConnection, RedisSettings};
use readmodel::keys::ALL_TAG;
use sqlx::PgPool;

use readmodel::tables::documents::{self, Document};
use readmodel::tables::redis_outbox;

/// Keeps a stored value whose version is higher than the one offered.
/// KEYS: document keys; ARGV: version, value for each key, in order.
const GUARDED_SET: &str = r"
local written = 0
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[2 * i - 1])
  local current = redis.call('GET', key)
  local keep = false
  if current then
    local newline = string.find(current, '\n', 1, true)
    if newline then
      local stored = tonumber(string.sub(current, 1, newline - 1))
      keep = stored ~= nil and stored > version
    end
  end
  if not keep then
    redis.call('SET', key, ARGV[2 * i])
    written = written + 1
  end
end
return written
";

/// Documents per guarded write.
const CHUNK: usize = 256;

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

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Writes the documents of `generation` (version-guarded) and then
    /// publishes `tags` on the invalidation channel.
    #[tracing::instrument(skip_all, fields(generation, documents = documents.len()), err)]
    pub async fn publish(&self, generation: i64, documents: &[Document], tags: &BTreeSet<String>) -> redis::RedisResult<()> {
        let mut connection = self.redis.get().await?;
        for chunk in documents.chunks(CHUNK) {
            let mut script = redis::cmd("EVAL");
            script.arg(GUARDED_SET).arg(chunk.len());
            for doc in chunk {
                script.arg(self.settings.doc_key(generation, &doc.key));
            }
            for doc in chunk {
                script.arg(doc.version).arg(encode(doc.version, &doc.body));
            }
            script.query_async::<i64>(&mut connection).await?;
        }
        if !tags.is_empty() {
            let message = tags.iter().map(String::as_str).collect::<Vec<_>>().join("\n");
            redis::cmd("PUBLISH")
                .arg(self.settings.invalidation_channel())
                .arg(message)
                .query_async::<i64>(&mut connection)
                .await?;
        }
        Ok(())
    }

    /// Records which generation serves (for readers without PostgreSQL) and
    /// tells every reader to drop what it cached.
    pub async fn announce_generation(&self, generation: i64) -> redis::RedisResult<()> {
        let mut connection = self.redis.get().await?;
        redis::pipe()
            .set(self.settings.active_generation_key(), generation)
            .ignore()
            .publish(self.settings.invalidation_channel(), ALL_TAG)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
    }

    /// Whether the generation's documents were copied in full since Redis last lost them.
    async fn synced(&self, generation: i64) -> redis::RedisResult<bool> {
        let mut connection = self.redis.get().await?;
        redis::cmd("EXISTS").arg(self.settings.synced_key(generation)).query_async(&mut connection).await
    }

    async fn mark_synced(&self, generation: i64) -> redis::RedisResult<()> {
        let mut connection = self.redis.get().await?;
        redis::cmd("SET").arg(self.settings.synced_key(generation)).arg(1).query_async(&mut connection).await
    }

    /// Deletes every key of a generation (after it was replaced).
    pub async fn drop_generation(&self, generation: i64) -> redis::RedisResult<u64> {
        let mut connection = self.redis.get().await?;
        let pattern = format!("{}*", self.settings.generation_prefix(generation));
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await?;
            if !keys.is_empty() {
                deleted += redis::cmd("UNLINK").arg(&keys).query_async::<u64>(&mut connection).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// True when Redis answers PING.
    pub async fn ping(&self) -> bool {
        self.redis.ping().await
    }
}

/// What one [`repair`] round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repair {
    /// Documents copied because Redis had lost the generation (flush, restart).
    pub full_copy: Option<u64>,
    /// Batches whose documents had not reached Redis, replayed.
    pub replayed_batches: u64,
}

/// Brings Redis up to date with the generation in PostgreSQL: copies every
/// document when the generation's `synced` marker is gone, otherwise replays
/// the `redis_outbox` rows older than `min_age` (batches whose push failed or
/// was cut short). Ends with an "everything" invalidation when it wrote anything.
#[tracing::instrument(skip_all, fields(generation = generation.id), err)]
pub async fn repair(pool: &PgPool, sink: &RedisSink, generation: &Generation, min_age: Duration) -> anyhow::Result<Repair> {
    let schema = &generation.schema;
    let mut repair = Repair::default();
    if !sink.synced(generation.id).await? {
        // Marked first: if Redis loses data while this copy runs, the marker
        // is gone too and the next round copies again.
        sink.mark_synced(generation.id).await?;
        let pending_until = redis_outbox::last(pool, schema).await?;
        let copied = copy_all(pool, sink, generation).await?;
        if let Some(id) = pending_until {
            redis_outbox::delete_until(pool, schema, id).await?;
        }
        tracing::info!(documents = copied, "copied the generation's documents into Redis");
        repair.full_copy = Some(copied);
    } else {
        for (id, keys) in redis_outbox::older_than(pool, schema, min_age).await? {
            let documents: Vec<Document> = documents::by_keys(pool, schema, &keys)
                .await?
                .into_iter()
                .map(|(key, version, body)| Document { key, version, body, tags: Vec::new() })
                .collect();
            sink.publish(generation.id, &documents, &BTreeSet::new()).await?;
            redis_outbox::delete(pool, schema, &[id]).await?;
            repair.replayed_batches += 1;
        }
        if repair.replayed_batches > 0 {
            tracing::info!(batches = repair.replayed_batches, "replayed documents that had not reached Redis");
        }
    }
    if repair != Repair::default() {
        // The tags of what was replayed were never announced: drop everything.
        sink.publish(generation.id, &[], &[ALL_TAG.to_owned()].into()).await?;
    }
    Ok(repair)
}

/// Copies every document of the generation, in key order, a chunk at a time.
pub async fn copy_all(pool: &PgPool, sink: &RedisSink, generation: &Generation) -> anyhow::Result<u64> {
    let (mut after, mut copied) = (String::new(), 0u64);
    loop {
        let chunk = documents::after(pool, &generation.schema, &after, 1000).await?;
        let Some(last) = chunk.last() else { return Ok(copied) };
        after = last.key.clone();
        sink.publish(generation.id, &chunk, &BTreeSet::new()).await?;
        copied += chunk.len() as u64;
    }
}
