//! Stream states as this process last committed them, with whether each
//! stream waits behind a parked record, so that a batch reads only the rows
//! of the streams it does not hold (and folds the others from memory).
//!
//! A state is taken out while a batch uses it: should the batch fail, the
//! next attempt restores it from the stored rows rather than trust a state
//! the failed batch may have moved.

use events::ArticleState;
use foldhash::{HashMap, HashSet};

use crate::record::Incoming;

/// The cached states, by stream id.
#[derive(Debug, Default)]
pub struct StateCache {
    states: HashMap<String, Cached>,
}

#[derive(Debug)]
struct Cached {
    state: ArticleState,
    halted: bool,
}

impl StateCache {
    /// Most streams kept; beyond it the cache starts over (cheap and rare).
    const CAPACITY: usize = 200_000;

    fn insert(&mut self, stream: String, cached: Cached) {
        if self.states.len() >= Self::CAPACITY && !self.states.contains_key(&stream) {
            self.states.clear();
        }
        self.states.insert(stream, cached);
    }

    /// Whether `stream`'s state is held.
    pub fn holds(&self, stream: &str) -> bool {
        self.states.contains_key(stream)
    }

    /// Takes `stream`'s state out: the state and whether the stream is halted.
    pub fn take(&mut self, stream: &str) -> Option<(ArticleState, bool)> {
        self.states.remove(stream).map(|c| (c.state, c.halted))
    }

    /// Keeps the states a committed batch left (`Outcome::states`, moved
    /// out of it), with the streams it left halted.
    pub fn keep(&mut self, states: Vec<(String, ArticleState)>, halted: &[String]) {
        let halted: HashSet<&String> = halted.iter().collect();
        let kept: Vec<(String, Cached)> = states
            .into_iter()
            .map(|(stream, state)| {
                let halted = halted.contains(&stream);
                (stream, Cached { state, halted })
            })
            .collect();
        for (stream, cached) in kept {
            self.insert(stream, cached);
        }
    }

    pub fn clear(&mut self) {
        self.states.clear();
    }

    /// Puts back what a lane's cache still holds (states it did not use).
    pub fn absorb(&mut self, other: StateCache) {
        for (stream, cached) in other.states {
            self.insert(stream, cached);
        }
    }

    /// Takes the cached states of the streams of `records` out, into a cache
    /// of their own (for a lane; its new states come back with [`Self::keep`]).
    pub fn take_streams(&mut self, records: &[Incoming]) -> StateCache {
        let mut taken = StateCache::default();
        for record in records {
            if let Some(stream) = record.stream()
                && let Some(cached) = self.states.remove(stream.as_ref())
            {
                taken.states.insert(stream.into_owned(), cached);
            }
        }
        taken
    }
}
