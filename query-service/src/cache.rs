//! The in-process tier: answers by key, bounded by bytes, in front of Redis
//! and PostgreSQL ([`crate::store::DocumentStore`]).
//!
//! - Invalidation: the projector publishes the tags of everything it changes
//!   (`article:ART-1`, `category:bolts`, `catalogue`, `low-stock`, or `*`);
//!   [`DocumentCache::listen`] drops the entries carrying them. The tier is
//!   used only while the subscription stands: without it (Redis down, or
//!   before it is made) requests go to the tiers below, since nothing would
//!   tell a cached answer it changed. After a reconnect the whole tier is
//!   dropped (messages may have been missed). The TTL is only a safety net.
//! - Single flight: concurrent requests for a cold key share one fetch.
//! - A fetch that raced with an invalidation is served but not kept.
//! - "Not found" is remembered too, under the tags that announce the thing
//!   once it exists, so that a client asking for an unknown id in a loop
//!   costs no database lookups.
//! - Hot keys: each entry counts its hits; every half minute the most asked
//!   documents are added to a Redis sorted set, from which a starting
//!   query-service warms its tier ([`DocumentCache::warm`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;
use futures::StreamExt;
use moka::future::Cache;
use moka::notification::RemovalCause;
use platform::metrics::{CACHE_EVENTS, CACHE_REQUESTS, CACHE_SIZE};
use platform::redis::{ALL_TAG, RedisSettings};
use platform::shutdown::CancellationToken;
use serde::{Deserialize, Serialize};

/// The cache tiers, their sizing, and warm-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheSettings {
    /// Upper bound of the cached answers' bytes (keys and bodies).
    pub max_bytes: u64,
    /// Safety-net expiry, in seconds; invalidation normally comes first.
    pub ttl_secs: u64,
    /// The tiers used, in order, comma-separated: `memory,redis,postgres`.
    /// Leaving out `memory` or `redis` is for measurements and diagnosis.
    pub tiers: String,
    /// Document keys loaded into memory at start, comma-separated, e.g.
    /// `stock:ART-1000,category:fasteners`.
    pub warmup_keys: String,
    /// How many of the documents most asked for (across instances) are
    /// loaded into memory at start.
    pub warmup_top: usize,
    /// How often this instance adds its most asked documents to the shared
    /// hot set in Redis, in seconds.
    pub hot_record_secs: u64,
    /// Longest wait for a PostgreSQL answer, in milliseconds; after a
    /// failure PostgreSQL is skipped until a probe (every second) succeeds.
    pub postgres_timeout_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            ttl_secs: 300,
            tiers: "memory,redis,postgres".into(),
            warmup_keys: String::new(),
            warmup_top: 100,
            hot_record_secs: 30,
            postgres_timeout_ms: 1_000,
        }
    }
}

/// Which tiers answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    pub memory: bool,
    pub redis: bool,
}

impl CacheSettings {
    /// The tiers named in `tiers`; PostgreSQL is always the last one.
    pub fn tiers(&self) -> anyhow::Result<Tiers> {
        let mut tiers = Tiers { memory: false, redis: false };
        for tier in self.tiers.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match tier {
                "memory" => tiers.memory = true,
                "redis" => tiers.redis = true,
                "postgres" => {}
                other => anyhow::bail!("APP_CACHE__TIERS: unknown tier {other:?} (memory, redis, postgres)"),
            }
        }
        Ok(tiers)
    }
}

/// Why an answer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No tier has it: the thing asked for does not exist. Carries the tags
    /// under which its absence is remembered (until it comes to exist).
    #[error("not found")]
    Missing(Arc<[String]>),
    #[error(transparent)]
    Failed(anyhow::Error),
}

/// An answer as served: body bytes, ETag, and the tags that invalidate it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub etag: HeaderValue,
    pub body: Bytes,
    pub tags: Arc<[String]>,
    hits: Arc<AtomicU64>,
    /// A remembered "not found".
    absent: bool,
}

impl Entry {
    /// A stored document: its version is the ETag.
    pub fn document(version: i64, body: Bytes, tags: Arc<[String]>) -> Self {
        let etag = HeaderValue::from_str(&format!("\"{version}\"")).expect("a number is a valid header");
        Self { etag, body, tags, hits: Arc::default(), absent: false }
    }

    fn found(self) -> Result<Entry, Arc<FetchError>> {
        if self.absent { Err(Arc::new(FetchError::Missing(self.tags))) } else { Ok(self) }
    }

    /// A remembered "not found": an unknown id asked again and again costs
    /// no lookup below memory until the projector announces it exists.
    fn absent(tags: Arc<[String]>) -> Self {
        Self { etag: HeaderValue::from_static("\"absent\""), body: Bytes::new(), tags, hits: Arc::default(), absent: true }
    }

    /// An answer computed from rows: a hash of the body is the ETag.
    pub fn computed(body: Vec<u8>, tags: Arc<[String]>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        let etag = HeaderValue::from_str(&format!("\"h{:016x}\"", hasher.finish())).expect("hex is a valid header");
        Self { etag, body: Bytes::from(body), tags, hits: Arc::default(), absent: false }
    }
}

/// The memory tier's hit counter, resolved once: a hit is the hot path.
static MEMORY_HITS: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| CACHE_REQUESTS.with_label_values(&["memory", "hit"]));

/// The in-process tier.
#[derive(Debug)]
pub struct DocumentCache {
    memory: Option<Cache<String, Entry>>,
    /// Advances with every invalidation: a fetch started before it may be stale.
    generation: AtomicU64,
    /// Whether invalidations arrive: only then may answers be kept in memory
    /// (otherwise a changed document would be served until its TTL).
    following: std::sync::atomic::AtomicBool,
}

impl DocumentCache {
    pub fn new(settings: &CacheSettings, enabled: bool) -> Self {
        let memory = enabled.then(|| {
            Cache::builder()
                .weigher(|key: &String, e: &Entry| (key.len() + e.body.len()).try_into().unwrap_or(u32::MAX))
                .max_capacity(settings.max_bytes)
                .time_to_live(Duration::from_secs(settings.ttl_secs))
                .support_invalidation_closures()
                .eviction_listener(|_, _, cause| {
                    if cause == RemovalCause::Size {
                        CACHE_EVENTS.with_label_values(&["eviction"]).inc();
                    }
                })
                .build()
        });
        Self { memory, generation: AtomicU64::new(0), following: std::sync::atomic::AtomicBool::new(false) }
    }

    /// The answer under `key`: from memory, else fetched once by `fetch`
    /// however many requests ask at the same time.
    pub async fn get<F>(&self, key: &str, fetch: F) -> Result<Entry, Arc<FetchError>>
    where
        F: Future<Output = Result<Entry, FetchError>>,
    {
        let Some(memory) = &self.memory else { return fetch.await.map_err(Arc::new) };
        if !self.following.load(Ordering::Acquire) {
            // No invalidations: nothing may be kept (or served) from memory.
            CACHE_REQUESTS.with_label_values(&["memory", "bypass"]).inc();
            return fetch.await.map_err(Arc::new);
        }
        if let Some(entry) = memory.get(key).await {
            MEMORY_HITS.inc();
            entry.hits.fetch_add(1, Ordering::Relaxed);
            return entry.found();
        }
        CACHE_REQUESTS.with_label_values(&["memory", "miss"]).inc();
        let started = self.generation.load(Ordering::Acquire);
        let remembered = async {
            match fetch.await {
                Err(FetchError::Missing(tags)) => Ok(Entry::absent(tags)),
                other => other,
            }
        };
        let entry = memory.try_get_with(key.to_owned(), remembered).await?;
        if self.generation.load(Ordering::Acquire) != started {
            // An invalidation arrived while fetching: serve it, do not keep it.
            memory.invalidate(key).await;
        }
        entry.found()
    }

    /// Whether invalidations arrive (the memory tier is in use).
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    /// The cached answer under `key`, if any (no fetch).
    pub async fn peek(&self, key: &str) -> Option<Entry> {
        self.memory.as_ref()?.get(key).await
    }

    /// Drops every entry with `tag` (everything for `*`).
    pub fn invalidate_tag(&self, tag: &str) {
        if tag == ALL_TAG {
            return self.invalidate_all();
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        CACHE_EVENTS.with_label_values(&["invalidation"]).inc();
        let Some(memory) = &self.memory else { return };
        let tag = tag.to_owned();
        if let Err(e) = memory.invalidate_entries_if(move |_, entry| entry.tags.iter().any(|t| *t == tag)) {
            tracing::warn!(error = %e, "invalidation by tag failed; dropping everything");
            self.invalidate_all();
        }
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        CACHE_EVENTS.with_label_values(&["invalidation"]).inc();
        if let Some(memory) = &self.memory {
            memory.invalidate_all();
        }
    }

    /// Entries and bytes held now (also set as gauges).
    pub async fn size(&self) -> (u64, u64) {
        let Some(memory) = &self.memory else { return (0, 0) };
        memory.run_pending_tasks().await;
        let (entries, bytes) = (memory.entry_count(), memory.weighted_size());
        CACHE_SIZE.with_label_values(&["entries"]).set(entries as i64);
        CACHE_SIZE.with_label_values(&["bytes"]).set(bytes as i64);
        (entries, bytes)
    }

    /// The `n` documents (not lists) with the most hits since the last call,
    /// with their hits; the counters start again from zero.
    pub fn take_hot_documents(&self, n: usize) -> Vec<(String, u64)> {
        let Some(memory) = &self.memory else { return Vec::new() };
        let mut hot: Vec<(String, u64)> = memory
            .iter()
            .filter(|(key, _)| is_document_key(key))
            .map(|(key, entry)| (key.as_ref().clone(), entry.hits.swap(0, Ordering::Relaxed)))
            .filter(|(_, hits)| *hits > 0)
            .collect();
        hot.sort_by(|a, b| b.1.cmp(&a.1));
        hot.truncate(n);
        hot
    }

    /// Follows the projector's invalidation channel until shut down; `on_all`
    /// runs after an "everything" invalidation (a generation swap).
    pub async fn listen(self: Arc<Self>, settings: RedisSettings, on_all: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
        let channel = settings.invalidation_channel();
        let Ok(client) = redis::Client::open(settings.url.as_str()) else {
            tracing::error!("invalid Redis URL; cache entries expire by TTL only");
            return;
        };
        while !shutdown.is_cancelled() {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if let Err(e) = pubsub.subscribe(&channel).await {
                        tracing::warn!(error = %e, "subscribing to invalidations failed");
                    } else {
                        // Whatever was published while not subscribed is lost.
                        self.invalidate_all();
                        self.following.store(true, Ordering::Release);
                        tracing::info!(%channel, "following cache invalidations");
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                message = messages.next() => match message {
                                    Some(m) => {
                                        let payload: String = m.get_payload().unwrap_or_default();
                                        for tag in payload.lines() {
                                            self.invalidate_tag(tag);
                                            if tag == ALL_TAG {
                                                on_all.notify_one();
                                            }
                                        }
                                    }
                                    None => break,
                                },
                            }
                        }
                        self.following.store(false, Ordering::Release);
                        self.invalidate_all();
                        tracing::warn!("invalidation subscription ended; memory tier bypassed until it is back");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "Redis unreachable for invalidations"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Keys of stored documents (as opposed to lists computed from rows).
pub fn is_document_key(key: &str) -> bool {
    key.starts_with("stock:") || key.starts_with("category:")
}
