//! The in-process tier: answers by key, bounded by bytes, in front of Redis
//! and PostgreSQL ([`crate::store::DocumentStore`]).
//!
//! - A hit costs a shard read lock, a hash probe and one reference-count
//!   increment ([`quick_cache`], whose hits do no other bookkeeping).
//! - Invalidation: the projector publishes the tags of everything it changes
//!   (`article:ART-1`, `category:bolts`, `catalogue`, `low-stock`, or `*`);
//!   [`DocumentCache::listen`] drops the entries carrying them, found through
//!   an index from tag to keys (a batch of the projector announces thousands
//!   of tags: each costs what it drops, not a scan of the tier). The tier is
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
//!
//! (About 400 lines of code and its unit tests: the tier, its index and its
//! subscription are one mechanism.)

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderValue;
use futures::StreamExt;
use platform::metrics::{CACHE_EVENTS, CACHE_REQUESTS, CACHE_SIZE};
use platform::redis::RedisSettings;
use platform::shutdown::CancellationToken;
use quick_cache::Lifecycle;
use readmodel::keys::ALL_TAG;

use crate::settings::CacheSettings;

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

/// A fetch from the tiers below memory, boxed: the future of a request
/// answered from memory then holds a pointer, not the state of a Redis or
/// PostgreSQL call (moving a large future costs every request).
pub type Fetch<'a> = Pin<Box<dyn Future<Output = Result<Entry, FetchError>> + Send + 'a>>;

/// An answer as served: body bytes, ETag, and the tags that invalidate it.
/// Cloning it is one reference-count increment.
#[derive(Debug, Clone)]
pub struct Entry(Arc<EntryInner>);

#[derive(Debug)]
struct EntryInner {
    etag: HeaderValue,
    body: Bytes,
    tags: Arc<[String]>,
    hits: AtomicU64,
    /// A remembered "not found".
    absent: bool,
}

impl Entry {
    fn new(etag: HeaderValue, body: Bytes, tags: Arc<[String]>, absent: bool) -> Self {
        Self(Arc::new(EntryInner { etag, body, tags, hits: AtomicU64::new(0), absent }))
    }

    /// A stored document: its version is the ETag.
    pub fn document(version: i64, body: Bytes, tags: Arc<[String]>) -> Self {
        let etag = HeaderValue::from_str(&format!("\"{version}\"")).expect("a number is a valid header");
        Self::new(etag, body, tags, false)
    }

    /// An answer computed from rows: a hash of the body is the ETag.
    pub fn computed(body: Vec<u8>, tags: Arc<[String]>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        let etag = HeaderValue::from_str(&format!("\"h{:016x}\"", hasher.finish())).expect("hex is a valid header");
        Self::new(etag, Bytes::from(body), tags, false)
    }

    /// A remembered "not found": an unknown id asked again and again costs
    /// no lookup below memory until the projector announces it exists.
    fn absent(tags: Arc<[String]>) -> Self {
        Self::new(HeaderValue::from_static("\"absent\""), Bytes::new(), tags, true)
    }

    pub fn etag(&self) -> &HeaderValue {
        &self.0.etag
    }

    pub fn body(&self) -> &Bytes {
        &self.0.body
    }

    pub fn tags(&self) -> &Arc<[String]> {
        &self.0.tags
    }

    fn found(self) -> Result<Entry, Arc<FetchError>> {
        if self.0.absent { Err(Arc::new(FetchError::Missing(self.0.tags.clone()))) } else { Ok(self) }
    }
}

/// What the tier holds per key: the answer and when it expires (in
/// seconds of the tier's coarse clock).
#[derive(Debug, Clone)]
struct Cached {
    entry: Entry,
    expires: u64,
}

/// Weighs an entry by its key and body (plus a fixed overhead per entry).
#[derive(Debug, Clone, Copy)]
struct ByBytes;

impl quick_cache::Weighter<String, Cached> for ByBytes {
    fn weight(&self, key: &String, cached: &Cached) -> u64 {
        (key.len() + cached.entry.body().len()) as u64 + 64
    }
}

/// Which keys carry a tag. May name keys no longer cached (dropping them
/// again is harmless); evicted keys are taken out as they go.
#[derive(Debug, Default)]
struct TagIndex {
    keys: Mutex<HashMap<String, HashSet<String>>>,
}

impl TagIndex {
    fn add(&self, key: &str, tags: &[String]) {
        let mut index = self.keys.lock().expect("tag index poisoned");
        for tag in tags {
            index.entry(tag.clone()).or_default().insert(key.to_owned());
        }
    }

    fn forget(&self, key: &str, tags: &[String]) {
        let mut index = self.keys.lock().expect("tag index poisoned");
        for tag in tags {
            if let Some(keys) = index.get_mut(tag) {
                keys.remove(key);
                if keys.is_empty() {
                    index.remove(tag);
                }
            }
        }
    }

    /// The keys of `tag`, no longer indexed.
    fn take(&self, tag: &str) -> HashSet<String> {
        self.keys.lock().expect("tag index poisoned").remove(tag).unwrap_or_default()
    }

    fn clear(&self) {
        self.keys.lock().expect("tag index poisoned").clear();
    }
}

/// Counts evictions and takes evicted keys out of the tag index. Runs under
/// a shard's lock and takes the index's: the index's lock is never held
/// while a shard's is taken, so the two cannot deadlock.
#[derive(Debug, Clone)]
struct Evictions(Arc<TagIndex>);

impl Lifecycle<String, Cached> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), key: String, cached: Cached) {
        CACHE_EVENTS.with_label_values(&["eviction"]).inc();
        self.0.forget(&key, cached.entry.tags());
    }
}

type Memory = quick_cache::sync::Cache<String, Cached, ByBytes, quick_cache::DefaultHashBuilder, Evictions>;

/// The memory tier's hit counter, resolved once: a hit is the hot path.
static MEMORY_HITS: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| CACHE_REQUESTS.with_label_values(&["memory", "hit"]));

/// The in-process tier.
#[derive(Debug)]
pub struct DocumentCache {
    memory: Option<Memory>,
    tags: Arc<TagIndex>,
    ttl: Duration,
    /// Seconds since `started`, advanced by [`Self::tick`]: the TTL is a
    /// safety net, not worth reading the clock on every hit.
    clock: AtomicU64,
    started: Instant,
    /// Advances with every invalidation: a fetch started before it may be stale.
    generation: AtomicU64,
    /// Whether invalidations arrive: only then may answers be kept in memory
    /// (otherwise a changed document would be served until its TTL).
    following: AtomicBool,
}

impl DocumentCache {
    pub fn new(settings: &CacheSettings, enabled: bool) -> Self {
        let tags = Arc::new(TagIndex::default());
        let memory = enabled.then(|| {
            // Sized for entries of about 2 KiB; the weight bound is what holds.
            let estimated = (settings.max_bytes / 2048).clamp(16, 1 << 20) as usize;
            Memory::with(estimated, settings.max_bytes, ByBytes, Default::default(), Evictions(tags.clone()))
        });
        Self {
            memory,
            tags,
            ttl: Duration::from_secs(settings.ttl_secs),
            clock: AtomicU64::new(0),
            started: Instant::now(),
            generation: AtomicU64::new(0),
            following: AtomicBool::new(false),
        }
    }

    /// The answer under `key`: from memory, else fetched once by `fetch`
    /// however many requests ask at the same time. `fetch` is called only
    /// on a miss.
    pub async fn get<'a>(&self, key: &str, fetch: impl FnOnce() -> Fetch<'a>) -> Result<Entry, Arc<FetchError>> {
        let Some(memory) = &self.memory else { return fetch().await.map_err(Arc::new) };
        if !self.following.load(Ordering::Acquire) {
            // No invalidations: nothing may be kept (or served) from memory.
            CACHE_REQUESTS.with_label_values(&["memory", "bypass"]).inc();
            return fetch().await.map_err(Arc::new);
        }
        if let Some(cached) = memory.get(key) {
            if cached.expires > self.clock.load(Ordering::Relaxed) {
                MEMORY_HITS.inc();
                cached.entry.0.hits.fetch_add(1, Ordering::Relaxed);
                return cached.entry.found();
            }
            self.remove(key);
        }
        self.fetch_once(memory, key, fetch).await
    }

    /// The miss path: one request fetches, the others for the same key wait for it.
    async fn fetch_once<'a>(
        &self,
        memory: &Memory,
        key: &str,
        fetch: impl FnOnce() -> Fetch<'a>,
    ) -> Result<Entry, Arc<FetchError>> {
        let guard = match memory.get_value_or_guard_async(key).await {
            Ok(cached) => {
                // Filled by the request that fetched it meanwhile.
                MEMORY_HITS.inc();
                return cached.entry.found();
            }
            Err(guard) => guard,
        };
        CACHE_REQUESTS.with_label_values(&["memory", "miss"]).inc();
        let started = self.generation.load(Ordering::Acquire);
        let entry = match fetch().await {
            Ok(entry) => entry,
            Err(FetchError::Missing(tags)) => Entry::absent(tags),
            // Dropping the guard lets a waiting request try again.
            Err(e) => return Err(Arc::new(e)),
        };
        if self.generation.load(Ordering::Acquire) == started {
            self.tags.add(key, entry.tags());
            let expires = self.clock.load(Ordering::Relaxed) + self.ttl.as_secs();
            let _ = guard.insert(Cached { entry: entry.clone(), expires });
            // An invalidation between the check and the insert: drop it again.
            if self.generation.load(Ordering::Acquire) != started {
                self.remove(key);
            }
        }
        // Otherwise an invalidation arrived while fetching: serve it, do not keep it.
        entry.found()
    }

    fn remove(&self, key: &str) {
        if let Some(memory) = &self.memory
            && let Some((key, cached)) = memory.remove(key)
        {
            self.tags.forget(&key, cached.entry.tags());
        }
    }

    /// Advances the coarse clock that expiry is measured by; call it every second.
    pub fn tick(&self) {
        self.clock.store(self.started.elapsed().as_secs(), Ordering::Relaxed);
    }

    /// Whether invalidations arrive (the memory tier is in use).
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    /// The cached answer under `key`, if any (no fetch).
    pub fn peek(&self, key: &str) -> Option<Entry> {
        let cached = self.memory.as_ref()?.peek(key)?;
        (cached.expires > self.clock.load(Ordering::Relaxed)).then_some(cached.entry)
    }

    /// Drops every entry with `tag` (everything for `*`).
    pub fn invalidate_tag(&self, tag: &str) {
        if tag == ALL_TAG {
            return self.invalidate_all();
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        CACHE_EVENTS.with_label_values(&["invalidation"]).inc();
        let Some(memory) = &self.memory else { return };
        for key in self.tags.take(tag) {
            if let Some((key, cached)) = memory.remove(&key) {
                // Its other tags no longer need to name it.
                self.tags.forget(&key, cached.entry.tags());
            }
        }
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        CACHE_EVENTS.with_label_values(&["invalidation"]).inc();
        if let Some(memory) = &self.memory {
            memory.clear();
            self.tags.clear();
        }
    }

    /// Entries and bytes held now (also set as gauges).
    pub fn size(&self) -> (u64, u64) {
        let Some(memory) = &self.memory else { return (0, 0) };
        let (entries, bytes) = (memory.len() as u64, memory.weight());
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
            .filter(|(key, _)| readmodel::keys::is_document(key))
            .map(|(key, cached)| {
                let hits = cached.entry.0.hits.swap(0, Ordering::Relaxed);
                (key, hits)
            })
            .filter(|(_, hits)| *hits > 0)
            .collect();
        hot.sort_by_key(|(_, hits)| std::cmp::Reverse(*hits));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> DocumentCache {
        let cache = DocumentCache::new(&CacheSettings::default(), true);
        cache.following.store(true, Ordering::Release);
        cache
    }

    fn doc(version: i64, tag: &str) -> Entry {
        Entry::document(version, Bytes::from_static(b"{}"), Arc::from(vec![tag.to_owned()]))
    }

    fn fetched(entry: Entry) -> impl FnOnce() -> Fetch<'static> {
        move || Box::pin(async move { Ok(entry) })
    }

    fn never() -> impl FnOnce() -> Fetch<'static> {
        || panic!("a cached answer must not be fetched again")
    }

    #[tokio::test]
    async fn a_second_request_is_answered_from_memory_until_its_tag_is_invalidated() {
        let cache = cache();
        assert_eq!(cache.get("stock:A", fetched(doc(1, "article:A"))).await.unwrap().etag(), "\"1\"");
        assert_eq!(cache.get("stock:A", never()).await.unwrap().etag(), "\"1\"");
        cache.invalidate_tag("article:B");
        assert_eq!(cache.get("stock:A", never()).await.unwrap().etag(), "\"1\"", "another tag leaves it");
        cache.invalidate_tag("article:A");
        assert_eq!(cache.get("stock:A", fetched(doc(2, "article:A"))).await.unwrap().etag(), "\"2\"");
    }

    #[tokio::test]
    async fn an_entry_with_several_tags_goes_with_any_of_them_and_leaves_the_index() {
        let cache = cache();
        let entry = Entry::computed(b"[]".to_vec(), Arc::from(vec!["catalogue".to_owned(), "category:x".to_owned()]));
        cache.get("list:1", fetched(entry.clone())).await.unwrap();
        cache.invalidate_tag("category:x");
        assert!(cache.peek("list:1").is_none());
        assert!(cache.tags.keys.lock().unwrap().is_empty(), "no tag names a dropped key");
    }

    #[tokio::test]
    async fn not_found_is_remembered_until_the_thing_is_announced() {
        let cache = cache();
        let missing = || -> Fetch<'static> { Box::pin(async { Err(FetchError::Missing(Arc::from(vec!["article:N".to_owned()]))) }) };
        assert!(matches!(*cache.get("stock:N", missing).await.unwrap_err(), FetchError::Missing(_)));
        assert!(matches!(*cache.get("stock:N", never()).await.unwrap_err(), FetchError::Missing(_)));
        cache.invalidate_tag("article:N");
        assert!(cache.get("stock:N", fetched(doc(1, "article:N"))).await.is_ok());
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_kept() {
        let cache = cache();
        let failing = || -> Fetch<'static> { Box::pin(async { Err(FetchError::Failed(anyhow::anyhow!("down"))) }) };
        assert!(cache.get("stock:A", failing).await.is_err());
        assert!(cache.get("stock:A", fetched(doc(1, "article:A"))).await.is_ok());
    }

    #[tokio::test]
    async fn an_invalidation_during_a_fetch_serves_the_answer_without_keeping_it() {
        let cache = Arc::new(cache());
        let racing = {
            let cache = cache.clone();
            move || -> Fetch<'static> {
                Box::pin(async move {
                    cache.invalidate_tag("article:A");
                    Ok(doc(1, "article:A"))
                })
            }
        };
        assert!(cache.get("stock:A", racing).await.is_ok());
        assert!(cache.peek("stock:A").is_none());
    }

    #[tokio::test]
    async fn an_expired_entry_is_fetched_again() {
        let settings = CacheSettings { ttl_secs: 0, ..CacheSettings::default() };
        let cache = DocumentCache::new(&settings, true);
        cache.following.store(true, Ordering::Release);
        cache.get("stock:A", fetched(doc(1, "article:A"))).await.unwrap();
        assert_eq!(cache.get("stock:A", fetched(doc(2, "article:A"))).await.unwrap().etag(), "\"2\"");
    }

    #[tokio::test]
    async fn without_invalidations_nothing_is_served_from_memory() {
        let cache = DocumentCache::new(&CacheSettings::default(), true);
        cache.get("stock:A", fetched(doc(1, "article:A"))).await.unwrap();
        assert_eq!(cache.get("stock:A", fetched(doc(2, "article:A"))).await.unwrap().etag(), "\"2\"");
    }

    #[tokio::test]
    async fn the_tier_stays_within_its_bytes() {
        let settings = CacheSettings { max_bytes: 64 * 1024, ..CacheSettings::default() };
        let cache = DocumentCache::new(&settings, true);
        cache.following.store(true, Ordering::Release);
        for i in 0..200 {
            let body = Bytes::from(vec![b' '; 1024]);
            let entry = Entry::document(1, body, Arc::from(vec![format!("article:{i}")]));
            cache.get(&format!("stock:{i}"), fetched(entry)).await.unwrap();
        }
        let (entries, bytes) = cache.size();
        assert!(bytes <= 64 * 1024 && entries < 200, "{entries} entries, {bytes} bytes");
        let indexed: usize = cache.tags.keys.lock().unwrap().values().map(HashSet::len).sum();
        assert_eq!(indexed as u64, entries, "evicted keys leave the tag index");
    }
}
