//! Whether this projector instance is doing its job, for its readiness and
//! its metrics: the partitions it owns, the partitions nobody owns, and how
//! long it has been behind without applying anything.
//!
//! Readiness is false while the instance owns no partition although some
//! partition has no owner (nobody applies it), while it cannot hold its
//! ownership session, or while it has been behind the end of a partition it
//! owns for longer than `stall_after` without committing a batch. An
//! instance that owns nothing because the others own every partition is a
//! ready stand-by.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use platform::metrics;

/// The shared record of this instance's progress.
#[derive(Debug)]
pub struct Progress {
    stall_after: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Set once the first ownership round completed.
    joined: bool,
    ownership_error: Option<String>,
    owned: BTreeSet<i32>,
    unowned: Vec<i32>,
    /// Next offset to apply, per owned partition.
    positions: HashMap<i32, i64>,
    /// Next offset to be written, per partition (the broker's high watermark).
    ends: HashMap<i32, i64>,
    /// Broker timestamp (ms) of the last applied record, per partition.
    last_applied_ms: HashMap<i32, i64>,
    last_progress: Instant,
    behind_since: Option<Instant>,
}

impl Progress {
    pub fn new(stall_after: Duration) -> Self {
        let inner = Inner {
            joined: false,
            ownership_error: None,
            owned: BTreeSet::new(),
            unowned: Vec::new(),
            positions: HashMap::new(),
            ends: HashMap::new(),
            last_applied_ms: HashMap::new(),
            last_progress: Instant::now(),
            behind_since: None,
        };
        Self { stall_after, inner: Mutex::new(inner) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("progress poisoned")
    }

    /// After an ownership round: what this instance owns and which partitions nobody does.
    pub fn owned(&self, owned: &BTreeSet<i32>, unowned: Vec<i32>) {
        let mut inner = self.lock();
        metrics::PROJECTOR_PARTITIONS_OWNED.set(owned.len() as i64);
        metrics::PROJECTOR_PARTITIONS_UNOWNED.set(unowned.len() as i64);
        inner.joined = true;
        inner.ownership_error = None;
        inner.owned = owned.clone();
        inner.unowned = unowned;
    }

    /// The ownership session failed; every partition was given up.
    pub fn ownership_failed(&self, error: String) {
        let mut inner = self.lock();
        metrics::PROJECTOR_PARTITIONS_OWNED.set(0);
        inner.ownership_error = Some(error);
        let released: Vec<i32> = inner.owned.iter().copied().collect();
        for p in released {
            inner.forget(p);
        }
        inner.owned.clear();
    }

    /// A partition was taken and positioned at `next`.
    pub fn positioned(&self, partition: i32, next: i64) {
        let mut inner = self.lock();
        inner.positions.insert(partition, next);
        // Taking over counts as progress: the stall clock starts now.
        inner.last_progress = Instant::now();
    }

    /// A partition was given up.
    pub fn released(&self, partition: i32) {
        self.lock().forget(partition);
    }

    /// A batch committed: its partitions' next offsets and last record times.
    pub fn applied(&self, next_offsets: &BTreeMap<i32, i64>, last_timestamps: impl IntoIterator<Item = (i32, i64)>) {
        let mut inner = self.lock();
        for (p, next) in next_offsets {
            let position = inner.positions.entry(*p).or_insert(*next);
            *position = (*position).max(*next);
        }
        inner.last_applied_ms.extend(last_timestamps);
        inner.last_progress = Instant::now();
    }

    /// The end of each partition, from the consumer's statistics: updates
    /// the lag metrics and whether the instance is stalled.
    pub fn ends(&self, ends: impl IntoIterator<Item = (i32, i64)>) {
        let mut inner = self.lock();
        inner.ends.extend(ends);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut behind = false;
        for p in inner.owned.clone() {
            let (Some(end), Some(position)) = (inner.ends.get(&p), inner.positions.get(&p)) else { continue };
            let lag = (end - position).max(0);
            behind |= lag > 0;
            let label = p.to_string();
            metrics::PROJECTOR_LAG_OFFSETS.with_label_values(&[&label]).set(lag);
            let seconds = match (lag, inner.last_applied_ms.get(&p)) {
                (0, _) | (_, None) => 0.0,
                (_, Some(ms)) => (now_ms - ms).max(0) as f64 / 1000.0,
            };
            metrics::PROJECTOR_LAG_SECONDS.with_label_values(&[&label]).set(seconds);
        }
        inner.behind_since = match (behind, inner.behind_since) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, since) => since,
        };
        metrics::PROJECTOR_STALLED_SECONDS.set(inner.stalled_for().as_secs_f64());
    }

    /// The readiness probe of the partitions this instance applies.
    pub fn probe(&self) -> Result<(), String> {
        let inner = self.lock();
        if let Some(error) = &inner.ownership_error {
            return Err(format!("cannot hold its partitions: {error}"));
        }
        if !inner.joined {
            return Err("has not taken its partitions yet".into());
        }
        if inner.owned.is_empty() && !inner.unowned.is_empty() {
            return Err(format!("owns no partition while partitions {:?} have no owner", inner.unowned));
        }
        let stalled = inner.stalled_for();
        if stalled > self.stall_after {
            let lag: i64 = inner
                .owned
                .iter()
                .filter_map(|p| Some((inner.ends.get(p)? - inner.positions.get(p)?).max(0)))
                .sum();
            return Err(format!("{lag} records behind with nothing applied for {} s", stalled.as_secs()));
        }
        Ok(())
    }
}

impl Inner {
    /// How long the instance has been behind without progress.
    fn stalled_for(&self) -> Duration {
        match self.behind_since {
            Some(since) => since.max(self.last_progress).elapsed(),
            None => Duration::ZERO,
        }
    }

    fn forget(&mut self, partition: i32) {
        self.positions.remove(&partition);
        self.last_applied_ms.remove(&partition);
        let label = partition.to_string();
        let _ = metrics::PROJECTOR_LAG_OFFSETS.remove_label_values(&[&label]);
        let _ = metrics::PROJECTOR_LAG_SECONDS.remove_label_values(&[&label]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owning(progress: &Progress, partitions: &[i32], unowned: Vec<i32>) {
        progress.owned(&partitions.iter().copied().collect(), unowned);
    }

    #[test]
    fn not_ready_before_the_first_ownership_round() {
        let progress = Progress::new(Duration::from_secs(60));
        assert!(progress.probe().unwrap_err().contains("not taken"));
    }

    #[test]
    fn owning_nothing_while_partitions_have_no_owner_is_not_ready() {
        let progress = Progress::new(Duration::from_secs(60));
        owning(&progress, &[], vec![2, 3]);
        assert_eq!(progress.probe().unwrap_err(), "owns no partition while partitions [2, 3] have no owner");
        // A stand-by while others own everything is ready.
        owning(&progress, &[], vec![]);
        assert_eq!(progress.probe(), Ok(()));
    }

    #[test]
    fn behind_without_progress_for_longer_than_the_bound_is_not_ready() {
        let progress = Progress::new(Duration::ZERO);
        owning(&progress, &[0], vec![]);
        progress.positioned(0, 10);
        progress.ends([(0, 10)]);
        assert_eq!(progress.probe(), Ok(()), "caught up");
        progress.ends([(0, 15)]);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(progress.probe().unwrap_err(), "5 records behind with nothing applied for 0 s");
        progress.applied(&BTreeMap::from([(0, 15)]), []);
        progress.ends([(0, 15)]);
        assert_eq!(progress.probe(), Ok(()), "caught up again");
    }

    #[test]
    fn a_lost_ownership_session_is_not_ready_and_names_the_error() {
        let progress = Progress::new(Duration::from_secs(60));
        owning(&progress, &[0, 1], vec![]);
        progress.ownership_failed("connection refused".into());
        assert_eq!(progress.probe().unwrap_err(), "cannot hold its partitions: connection refused");
        owning(&progress, &[0, 1], vec![]);
        assert_eq!(progress.probe(), Ok(()));
    }
}
