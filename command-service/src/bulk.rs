//! Deciding many commands in a caller's transaction: the bulk import's
//! path (the worker's `import` job). The same locking, the same `decide`,
//! the same append as the HTTP path's group commit ([`crate::execute`]), but
//! in a transaction the caller owns, so that the import's checkpoint and
//! refused lines commit with the events of its chunk: a chunk is applied
//! once or not at all.
//!
//! Between chunks the decided states stay in a [`StateCache`]: a stream an
//! earlier chunk wrote is only version-checked, not read again (a changed
//! version — another writer, or a chunk rolled back — reads it again). A
//! dry run decides against an overlay of the states its earlier chunks left
//! and writes no events.

use std::collections::{BTreeMap, HashMap};

use events::{ArticleState, DomainError, Policy, StreamId};
use sqlx::PgConnection;

use crate::execute::{Decided, Request, decide_all, streams_of};
use crate::store::{self, AppendError, StateCache};

/// Decides chunk after chunk of commands.
#[derive(Debug)]
pub struct Bulk {
    policy: Policy,
    cache: StateCache,
    /// Some for a dry run: the states its chunks left behind.
    overlay: Option<HashMap<StreamId, ArticleState>>,
}

impl Bulk {
    pub fn new(policy: Policy, dry_run: bool) -> Self {
        Self { policy, cache: StateCache::default(), overlay: dry_run.then(HashMap::new) }
    }

    /// Forgets the cached states (after a chunk was rolled back: they may
    /// hold its decisions).
    pub fn forget(&mut self) {
        self.cache.clear();
    }

    /// Decides `requests` in order, each against the state the ones before
    /// it left, and (unless a dry run) appends the accepted ones' events in
    /// `tx`, with outbox rows and a notification to the relays. Per request:
    /// the number of events it appended, or the rule it broke.
    pub async fn decide(&mut self, tx: &mut PgConnection, requests: &[Request]) -> Result<Vec<Result<usize, DomainError>>, AppendError> {
        let streams = streams_of(requests);
        let Some(overlay) = &mut self.overlay else {
            let loaded = store::lock_states(tx, &streams, &mut self.cache).await?;
            let mut batch = decide_all(&self.policy, requests, loaded, |_, _| false);
            let (envelopes, writes) = batch.writes();
            let counts = count_events(requests, &batch.decided, &envelopes);
            store::append(&mut *tx, &envelopes, &writes, true).await?;
            let decided = batch.into_outcome(&mut self.cache);
            return Ok(outcomes(decided, counts));
        };
        let missing: Vec<&StreamId> = streams.iter().copied().filter(|s| !overlay.contains_key(*s)).collect();
        let (mut states, mut snapshots) = store::lock_states(tx, &missing, &mut StateCache::default()).await?;
        for s in &streams {
            if let Some(state) = overlay.get(*s) {
                states.insert((*s).clone(), state.clone());
                snapshots.insert((*s).clone(), state.version);
            }
        }
        let batch = decide_all(&self.policy, requests, (states, snapshots), |_, _| false);
        let counts = vec![0; requests.len()];
        let decided = batch.decided;
        overlay.extend(batch.states);
        Ok(outcomes(decided, counts))
    }
}

/// Events appended per request, from the command ids of the envelopes.
fn count_events(requests: &[Request], decided: &[Decided], envelopes: &[events::Envelope]) -> Vec<usize> {
    let mut by_command: BTreeMap<uuid::Uuid, usize> = BTreeMap::new();
    for e in envelopes {
        *by_command.entry(e.causation_id).or_default() += 1;
    }
    requests
        .iter()
        .zip(decided)
        .map(|(r, d)| match d {
            Decided::Accepted { .. } => by_command.get(&r.meta.command_id).copied().unwrap_or(0),
            _ => 0,
        })
        .collect()
}

fn outcomes(decided: Vec<Decided>, counts: Vec<usize>) -> Vec<Result<usize, DomainError>> {
    decided
        .into_iter()
        .zip(counts)
        .map(|(d, n)| match d {
            Decided::Accepted { .. } => Ok(n),
            Decided::Refused(rule) => Err(rule),
            Decided::Replay => unreachable!("a bulk request carries no idempotency key"),
        })
        .collect()
}
