//! The in-process tier: documents by key, bounded by bytes, in front of Redis
//! and PostgreSQL ([`crate::documents::DocumentStore`]).
//!
//! - Invalidation: the projector publishes the tags of every document it
//!   rewrites; [`DocumentCache::listen`] drops the entries with those tags.
//!   After a reconnect the whole tier is dropped (messages may have been
//!   missed). The TTL is only a safety net.
//! - Single flight: concurrent requests for a cold key share one fetch.
//! - A fetch that raced with an invalidation is not kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use moka::future::Cache;
use moka::notification::RemovalCause;
use platform::metrics::{CACHE_EVENTS, CACHE_REQUESTS, CACHE_SIZE};
use platform::redis::{RedisSettings, document_tags};
use platform::shutdown::CancellationToken;
use serde::{Deserialize, Serialize};

use crate::documents::StoredDocument;

/// Sizing of the in-process tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheSettings {
    /// Upper bound of the cached documents' bytes (keys and bodies).
    pub max_bytes: u64,
    /// Safety-net expiry, in seconds; invalidation normally comes first.
    pub ttl_secs: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024 * 1024, ttl_secs: 300 }
    }
}

/// Why a document could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No tier has it.
    #[error("not found")]
    Missing,
    #[error(transparent)]
    Failed(anyhow::Error),
}

/// The in-process tier.
#[derive(Debug)]
pub struct DocumentCache {
    memory: Cache<String, StoredDocument>,
    /// Advances with every invalidation: a fetch started before it may be stale.
    generation: AtomicU64,
}

impl DocumentCache {
    pub fn new(settings: &CacheSettings) -> Self {
        let memory = Cache::builder()
            .weigher(|key: &String, doc: &StoredDocument| (key.len() + doc.body.len()).try_into().unwrap_or(u32::MAX))
            .max_capacity(settings.max_bytes)
            .time_to_live(Duration::from_secs(settings.ttl_secs))
            .support_invalidation_closures()
            .eviction_listener(|_, _, cause| {
                if cause == RemovalCause::Size {
                    CACHE_EVENTS.with_label_values(&["eviction"]).inc();
                }
            })
            .build();
        Self { memory, generation: AtomicU64::new(0) }
    }

    /// The document under `key`: from memory, else fetched once by `fetch`
    /// however many requests ask at the same time.
    pub async fn get<F>(&self, key: &str, fetch: F) -> Result<StoredDocument, Arc<FetchError>>
    where
        F: Future<Output = Result<StoredDocument, FetchError>>,
    {
        if let Some(doc) = self.memory.get(key).await {
            CACHE_REQUESTS.with_label_values(&["memory", "hit"]).inc();
            return Ok(doc);
        }
        CACHE_REQUESTS.with_label_values(&["memory", "miss"]).inc();
        let started = self.generation.load(Ordering::Acquire);
        let doc = self.memory.try_get_with(key.to_owned(), fetch).await?;
        if self.generation.load(Ordering::Acquire) != started {
            // An invalidation arrived while fetching: serve it, do not keep it.
            self.memory.invalidate(key).await;
        }
        Ok(doc)
    }

    /// Drops every entry with `tag`.
    pub fn invalidate_tag(&self, tag: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        CACHE_EVENTS.with_label_values(&["invalidation"]).inc();
        let tag = tag.to_owned();
        if let Err(e) = self.memory.invalidate_entries_if(move |key, _| document_tags(key).contains(&tag)) {
            tracing::warn!(error = %e, "invalidation by tag failed; dropping everything");
            self.invalidate_all();
        }
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.memory.invalidate_all();
    }

    /// Entries and bytes held now (also set as gauges).
    pub async fn size(&self) -> (u64, u64) {
        self.memory.run_pending_tasks().await;
        let (entries, bytes) = (self.memory.entry_count(), self.memory.weighted_size());
        CACHE_SIZE.with_label_values(&["entries"]).set(entries as i64);
        CACHE_SIZE.with_label_values(&["bytes"]).set(bytes as i64);
        (entries, bytes)
    }

    /// Follows the projector's invalidation channel until shut down.
    pub async fn listen(self: Arc<Self>, settings: RedisSettings, shutdown: CancellationToken) {
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
                                        }
                                    }
                                    None => break,
                                },
                            }
                        }
                        tracing::warn!("invalidation subscription ended; reconnecting");
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
