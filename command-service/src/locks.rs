//! Serialises commands per stream inside one process, so that an instance never
//! loses an optimistic-concurrency race against itself; conflicts are left to
//! commands from other instances.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// One async mutex per stream id, created on demand and dropped when unused.
#[derive(Debug, Default)]
pub struct StreamLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a stream's lock; releases it (and forgets an unused lock) on drop.
#[derive(Debug)]
pub struct StreamGuard<'a> {
    owner: &'a StreamLocks,
    stream: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl StreamLocks {
    pub async fn lock(&self, stream: &str) -> StreamGuard<'_> {
        let mutex = {
            let mut locks = self.locks.lock().expect("stream lock table poisoned");
            locks.entry(stream.to_owned()).or_default().clone()
        };
        StreamGuard { owner: self, stream: stream.to_owned(), guard: Some(mutex.lock_owned().await) }
    }

    /// Streams with a live lock (held or awaited).
    pub fn len(&self) -> usize {
        self.locks.lock().expect("stream lock table poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.owner.locks.lock().expect("stream lock table poisoned");
        // Only the table holds the mutex: nobody holds or awaits it.
        if locks.get(&self.stream).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_second_command_on_the_same_stream_waits_for_the_first() {
        let locks = Arc::new(StreamLocks::default());
        let first = locks.lock("a").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock("a").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        let _other = locks.lock("b").await; // other streams are not blocked
        drop(first);
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn unused_locks_are_forgotten() {
        let locks = StreamLocks::default();
        drop(locks.lock("a").await);
        assert!(locks.is_empty());
    }
}
