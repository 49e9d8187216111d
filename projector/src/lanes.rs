//! Applying a batch in several transactions at once: one per lane, a lane
//! being a group of the batch's partitions.
//!
//! A stream's events are all on one partition (the record key is the
//! article), so lanes never share a stream, and each lane's transaction stores
//! the offsets of its own partitions with its rows: the exactly-once effect
//! holds per partition, as with one transaction. Lanes let PostgreSQL work on
//! two cores at once, and fold one lane's events while another's rows are
//! written; measured with `scripts/bench.sh projector`, two lanes on two
//! cores applied the same history in about 60 % of the time of one.
//!
//! The rows two lanes may both touch are the categories' summaries (and their
//! documents): a lane updates them last, in category order, so the second lane
//! waits only for the first one's commit, and never deadlocks with it.
//!
//! If a lane fails, the others may have committed: the caller applies the
//! whole batch again, and the committed lanes' records are then skipped as
//! redeliveries (their streams' positions are past them).

use std::collections::BTreeSet;
use std::sync::Arc;

use sqlx::PgPool;

use readmodel::Statements;

use crate::apply::apply_batch;
use crate::batch::{Mode, Outcome};
use crate::cache::StateCache;
use crate::record::Incoming;

/// What applying a batch came to.
#[derive(Debug)]
pub enum Applied {
    /// Every lane committed; their outcomes merged (the `parked` indices of
    /// the merged outcome refer to each lane's records, not to the batch).
    Committed(Outcome),
    /// The pointer names another generation now; the lanes that saw it wrote nothing.
    GenerationChanged(i64),
}

/// Splits `batch` into at most `lanes` lanes by partition: the batch's
/// partitions in order, dealt round-robin. Each lane keeps record order.
pub fn split(batch: Vec<Incoming>, lanes: usize) -> Vec<Vec<Incoming>> {
    let partitions: BTreeSet<i32> = batch.iter().map(|r| r.partition).collect();
    let lanes = lanes.clamp(1, partitions.len().max(1));
    let lane_of = |p: i32| partitions.iter().position(|q| *q == p).unwrap_or(0) % lanes;
    let mut split: Vec<Vec<Incoming>> = (0..lanes).map(|_| Vec::new()).collect();
    for record in batch {
        split[lane_of(record.partition)].push(record);
    }
    split
}

/// Applies each lane's records in a transaction of its own, each lane on a
/// task of its own (so folding runs on every core while rows are written).
/// With `serving`, each transaction first checks (and share-locks) the
/// read-model pointer: a lane that finds another generation serving writes
/// nothing. `before_commit` runs with each lane's records and outcome before
/// its commit (the projector parks poison there). The lanes' records come
/// back in the same order, decoded.
#[allow(clippy::too_many_arguments)]
pub async fn apply<F, Fut>(
    pool: &PgPool,
    sql: &Arc<Statements>,
    topic: &str,
    lanes: Vec<Vec<Incoming>>,
    cache: &mut StateCache,
    mode: &Mode,
    serving: Option<i64>,
    before_commit: F,
) -> (Vec<Vec<Incoming>>, anyhow::Result<Applied>)
where
    F: Fn(&[Incoming], &Outcome) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|mut records| {
            // Each lane works on the cached states of its own streams.
            let mut lane_cache = cache.take_streams(&records);
            let (pool, sql, topic, mode, before_commit) =
                (pool.clone(), sql.clone(), topic.to_owned(), mode.clone(), before_commit.clone());
            tokio::spawn(async move {
                if records.is_empty() {
                    return (records, lane_cache, Ok(None));
                }
                for record in &mut records {
                    record.decode();
                }
                let result = run_lane(&pool, &sql, &topic, &records, &mut lane_cache, &mode, serving, before_commit).await;
                (records, lane_cache, result.map(Some))
            })
        })
        .collect();
    let mut merged = Outcome::default();
    let (mut changed, mut failure) = (None, None);
    let mut returned = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (records, lane_cache, result) = match task.await {
            Ok(done) => done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        returned.push(records);
        // States of streams a failed lane took out stay out: they are rebuilt from the rows.
        cache.absorb(lane_cache);
        match result {
            Ok(Some(Ok(mut outcome))) => {
                cache.keep(std::mem::take(&mut outcome.states), &outcome.halted);
                merged.merge(outcome);
            }
            Ok(Some(Err(pointer))) => changed = Some(pointer),
            Ok(None) => {}
            Err(e) => failure = Some(e),
        }
    }
    let applied = match (failure, changed) {
        (Some(e), _) => Err(e),
        (None, Some(pointer)) => Ok(Applied::GenerationChanged(pointer)),
        (None, None) => Ok(Applied::Committed(merged)),
    };
    (returned, applied)
}

/// One lane's transaction: its outcome, or the generation that serves instead.
#[allow(clippy::too_many_arguments)]
async fn run_lane<F, Fut>(
    pool: &PgPool,
    sql: &Statements,
    topic: &str,
    records: &[Incoming],
    cache: &mut StateCache,
    mode: &Mode,
    serving: Option<i64>,
    before_commit: F,
) -> anyhow::Result<Result<Outcome, i64>>
where
    F: Fn(&[Incoming], &Outcome) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut tx = pool.begin().await?;
    if let Some(serving) = serving {
        let pointer = platform::metrics::timed("read_pointer", readmodel::generation::serving_locked(&mut *tx)).await?;
        if pointer != serving {
            tx.rollback().await?;
            return Ok(Err(pointer));
        }
    }
    let outcome = platform::metrics::timed("apply_batch", apply_batch(&mut tx, sql, topic, records, cache, mode)).await?;
    before_commit(records, &outcome).await?;
    platform::metrics::timed("commit_batch", tx.commit()).await?;
    Ok(Ok(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> Incoming {
        Incoming::new(partition, offset, None, None, Vec::new(), Vec::new())
    }

    #[test]
    fn lanes_split_by_partition_and_keep_each_partition_in_order() {
        let batch = vec![record(3, 0), record(1, 0), record(3, 1), record(0, 0), record(1, 1), record(2, 0)];
        let lanes = split(batch, 2);
        let seen: Vec<Vec<(i32, i64)>> = lanes.iter().map(|l| l.iter().map(|r| (r.partition, r.offset)).collect()).collect();
        // Partitions 0, 1, 2, 3 in order, dealt to lanes 0, 1, 0, 1.
        assert_eq!(seen, vec![vec![(0, 0), (2, 0)], vec![(3, 0), (1, 0), (3, 1), (1, 1)]]);
    }

    #[test]
    fn a_batch_of_one_partition_is_one_lane() {
        let lanes = split(vec![record(5, 0), record(5, 1)], 4);
        assert_eq!(lanes.len(), 1);
        assert_eq!(lanes[0].len(), 2);
    }
}
