//! A batch's vocabulary: how its records are applied ([`Mode`]: live,
//! building a generation, re-driving parked ones) and what came of it
//! ([`Outcome`], with the records it parked and why), or why nothing of it
//! was written ([`ApplyError`]). Applying is [`crate::apply`].

use std::collections::{BTreeMap, BTreeSet};

use events::ArticleState;
use readmodel::tables::documents::Document;

/// Why a batch could not be applied; nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Another writer moved one of the batch's streams since its state was
    /// read (a re-drive, or another instance during a handover): apply the
    /// batch again, from the stored rows.
    #[error("a stream moved while the batch was applied; it is applied again")]
    Conflict,
    /// A stored stream state this code cannot read: rebuild the read models.
    #[error("the stored state of {stream} is unreadable ({error}); rebuild the read models (`projector rebuild`)")]
    UnreadableState { stream: String, error: String },
}

/// Why a record was parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a readable event (headers, JSON, unknown type or version).
    Undecodable,
    /// An event that does not fit its stream's state.
    Unfoldable,
    /// An earlier event of the stream is missing.
    Gap,
    /// Not poison itself: waits behind a parked event of its stream.
    Halted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::Unfoldable => "unfoldable",
            Reason::Gap => "gap",
            Reason::Halted => "halted",
        }
    }
}

/// A record parked by this batch.
#[derive(Debug, Clone)]
pub struct Parked {
    /// Index of the record in the batch.
    pub index: usize,
    pub stream: Option<String>,
    pub reason: Reason,
    pub error: String,
}

/// How records are applied.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// Consumed records: offsets are stored, poison is parked.
    #[default]
    Live,
    /// Building a new generation: as live, but poison an operator skipped in
    /// the serving generation (by partition and offset) is skipped again.
    Build { skipped: std::collections::HashSet<(i32, i64)> },
    /// Parked records of halted streams, applied again after a fix; with
    /// `skip_first`, the first one is passed over (an operator's decision).
    Redrive { skip_first: bool },
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: usize,
    /// Redelivered events skipped.
    pub duplicates: usize,
    pub parked: Vec<Parked>,
    /// Dead letters applied now (re-drive), by id.
    pub redriven: Vec<i64>,
    /// Dead letters passed over by an operator (re-drive with skip), by id.
    pub skipped: Vec<i64>,
    /// Documents written, to be pushed to Redis after commit.
    pub documents: Vec<Document>,
    /// Cache tags to publish after commit.
    pub tags: BTreeSet<String>,
    /// The next offset to consume per partition, as stored with the batch.
    pub next_offsets: BTreeMap<i32, i64>,
    /// New stream states, for the caller's cache once committed (the
    /// batch's streams were taken out of the cache).
    pub states: Vec<(String, ArticleState)>,
    /// The `redis_outbox` rows naming this batch's documents (one per transaction).
    pub redis_outbox_ids: Vec<i64>,
    /// Streams halted after this batch (parked records wait).
    pub halted: Vec<String>,
}

impl Outcome {
    /// Adds what another transaction of the same batch did (another lane's).
    pub fn merge(&mut self, other: Outcome) {
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.parked.extend(other.parked);
        self.redriven.extend(other.redriven);
        self.skipped.extend(other.skipped);
        self.documents.extend(other.documents);
        self.tags.extend(other.tags);
        for (partition, next) in other.next_offsets {
            let mine = self.next_offsets.entry(partition).or_insert(next);
            *mine = (*mine).max(next);
        }
        self.states.extend(other.states);
        self.redis_outbox_ids.extend(other.redis_outbox_ids);
        self.halted.extend(other.halted);
    }
}

