//! Taking and giving up partitions of the events topic, so that every
//! partition is applied by exactly one running instance and the instances
//! share them evenly.
//!
//! Each instance keeps a PostgreSQL session of its own holding its
//! membership lock and the locks of the partitions it applies
//! ([`platform::ownership`]). Every round (once a second by default, between
//! batches) it reads who is a member and who owns what, and [`plan`]s:
//! members ranked by backend pid, the one at rank `r` of `m` aims at
//! `P / m` partitions, plus one if `r < P % m`. Below its aim it takes free
//! partitions; above it, it gives the surplus up only when another member
//! is below its own aim (so nothing is released that nobody will take). A
//! partition that stays free for [`FREE_ROUNDS`] rounds is taken by whoever
//! sees it, whatever the aims: liveness before balance.
//!
//! Why not the broker's consumer group: a projector killed with SIGKILL and
//! started again on the local broker (Tansu 0.6.0) never received a
//! partition again (the coordinator kept the dead member), and that
//! broker's tracker reports members that join and are never assigned. With
//! locks, a killed instance's partitions are free the moment PostgreSQL sees
//! its connection close, on any broker; the consumer group is kept only so
//! that lag tools see committed offsets. Measured in
//! `e2e/tests/faults.rs`: a killed projector's partitions are applied again
//! within about a second of the restart (docs/operations.md).

use std::collections::{BTreeMap, BTreeSet};

use platform::ownership::{self, View};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// Rounds a partition must be seen free before any member takes it.
pub const FREE_ROUNDS: u32 = 3;

/// What a round decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Partitions to give up (owned now).
    pub release: Vec<i32>,
    /// Free partitions to try to take, in order.
    pub take: Vec<i32>,
}

/// Decides what the member with session `me` should take and give up, given
/// the `view` of PostgreSQL, the topic's `partitions`, and how many rounds
/// each free partition has been seen free (`free_for`).
pub fn plan(me: i32, view: &View, partitions: &[i32], free_for: &BTreeMap<i32, u32>) -> Plan {
    let mut members = view.members.clone();
    if !members.contains(&me) {
        members.push(me);
        members.sort_unstable();
    }
    let total = partitions.len();
    let aim = |pid: i32| {
        let rank = members.iter().position(|m| *m == pid).unwrap_or(0);
        total / members.len() + usize::from(rank < total % members.len())
    };
    let held = |pid: i32| view.owners.values().filter(|o| **o == pid).count();
    let mine: Vec<i32> = view.owners.iter().filter(|(_, o)| **o == me).map(|(p, _)| *p).collect();
    let my_aim = aim(me);
    let others_short: usize = members.iter().filter(|m| **m != me).map(|m| aim(*m).saturating_sub(held(*m))).sum();
    let free: Vec<i32> = view.unowned(partitions).collect();

    let mut plan = Plan::default();
    if mine.len() > my_aim {
        let surplus = (mine.len() - my_aim).min(others_short);
        plan.release = mine.iter().rev().take(surplus).copied().collect();
    }
    let wanted = my_aim.saturating_sub(mine.len());
    let (mut take, rest): (Vec<i32>, Vec<i32>) = {
        let mut free = free.into_iter();
        let take: Vec<i32> = free.by_ref().take(wanted).collect();
        (take, free.collect())
    };
    // Free for long: nobody else is taking it.
    take.extend(rest.into_iter().filter(|p| free_for.get(p).is_some_and(|n| *n >= FREE_ROUNDS)));
    plan.take = take;
    plan
}

/// What changed in a round.
#[derive(Debug, Default)]
pub struct Change {
    pub taken: Vec<i32>,
    pub released: Vec<i32>,
}

/// This instance's ownership session and the partitions it holds.
#[derive(Debug)]
pub struct Ownership {
    options: PgConnectOptions,
    topic: String,
    session: Option<(PgConnection, i32)>,
    owned: BTreeSet<i32>,
    free_for: BTreeMap<i32, u32>,
    /// What the last round saw.
    pub last: View,
}

impl Ownership {
    pub fn new(options: PgConnectOptions, topic: String) -> Self {
        Self { options, topic, session: None, owned: BTreeSet::new(), free_for: BTreeMap::new(), last: View::default() }
    }

    /// The partitions this instance holds.
    pub fn owned(&self) -> &BTreeSet<i32> {
        &self.owned
    }

    /// One round: joins if needed, reads the view, takes and releases as
    /// [`plan`] says. `give_up` runs for every partition before its lock
    /// is released (the caller stops applying it there).
    pub async fn round(&mut self, partitions: &[i32], mut give_up: impl FnMut(i32)) -> Result<Change, sqlx::Error> {
        if self.session.is_none() {
            let mut conn = PgConnection::connect_with(&self.options).await?;
            let pid = ownership::join(&mut conn, &self.topic).await?;
            tracing::info!(pid, "joined the projector instances");
            self.session = Some((conn, pid));
        }
        let (conn, me) = self.session.as_mut().expect("joined above");
        let me = *me;
        let view = ownership::view(conn, &self.topic).await?;
        for p in partitions {
            if view.owners.contains_key(p) {
                self.free_for.remove(p);
            } else {
                *self.free_for.entry(*p).or_default() += 1;
            }
        }
        let plan = plan(me, &view, partitions, &self.free_for);
        let mut change = Change::default();
        for p in plan.release {
            give_up(p);
            ownership::release(conn, &self.topic, p).await?;
            self.owned.remove(&p);
            change.released.push(p);
        }
        for p in plan.take {
            if ownership::try_take(conn, &self.topic, p).await? {
                self.owned.insert(p);
                self.free_for.remove(&p);
                change.taken.push(p);
            }
        }
        self.last = ownership::view(conn, &self.topic).await?;
        Ok(change)
    }

    /// The session failed: every lock may be gone with it. Returns the
    /// partitions held (to stop applying them); the next round joins again.
    pub fn lost(&mut self) -> BTreeSet<i32> {
        self.session = None;
        self.last = View::default();
        std::mem::take(&mut self.owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [i32; 4] = [0, 1, 2, 3];

    fn view(members: &[i32], owners: &[(i32, i32)]) -> View {
        View { members: members.to_vec(), owners: owners.iter().copied().collect() }
    }

    #[test]
    fn a_lone_member_takes_every_partition() {
        let plan = plan(10, &view(&[10], &[]), &ALL, &BTreeMap::new());
        assert_eq!(plan, Plan { release: vec![], take: vec![0, 1, 2, 3] });
    }

    #[test]
    fn a_restarted_member_takes_what_the_dead_one_left() {
        // The killed instance's session is gone: its locks with it.
        let plan = plan(11, &view(&[11], &[]), &ALL, &BTreeMap::new());
        assert_eq!(plan.take, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_member_above_its_aim_gives_the_surplus_to_a_member_below_it() {
        let v = view(&[10, 20], &[(0, 10), (1, 10), (2, 10), (3, 10)]);
        assert_eq!(plan(10, &v, &ALL, &BTreeMap::new()), Plan { release: vec![3, 2], take: vec![] });
        // The newcomer waits for them to be free.
        assert_eq!(plan(20, &v, &ALL, &BTreeMap::new()), Plan::default());
    }

    #[test]
    fn nothing_is_released_that_nobody_would_take() {
        // Three members, four partitions: aims 2, 1, 1 by rank.
        let v = view(&[10, 20, 30], &[(0, 10), (1, 10), (2, 20), (3, 30)]);
        for me in [10, 20, 30] {
            assert_eq!(plan(me, &v, &ALL, &BTreeMap::new()), Plan::default(), "member {me}");
        }
    }

    #[test]
    fn the_aims_add_up_to_the_partitions() {
        for members in 1..=6 {
            let pids: Vec<i32> = (1..=members).collect();
            let v = view(&pids, &[]);
            let wanted: usize = pids.iter().map(|me| plan(*me, &v, &ALL, &BTreeMap::new()).take.len()).sum();
            assert_eq!(wanted, 4, "{members} members");
        }
    }

    #[test]
    fn a_partition_free_for_several_rounds_is_taken_by_a_member_at_its_aim() {
        // 20 should take partition 3 but does not (stuck): 10 takes it after FREE_ROUNDS.
        let v = view(&[10, 20], &[(0, 10), (1, 10), (2, 20)]);
        assert_eq!(plan(10, &v, &ALL, &BTreeMap::from([(3, FREE_ROUNDS - 1)])).take, Vec::<i32>::new());
        assert_eq!(plan(10, &v, &ALL, &BTreeMap::from([(3, FREE_ROUNDS)])).take, vec![3]);
    }

    #[test]
    fn a_member_missing_from_the_view_counts_itself() {
        // Between joining and the view, or a view read on another snapshot.
        let plan = plan(5, &view(&[], &[]), &[0, 1], &BTreeMap::new());
        assert_eq!(plan.take, vec![0, 1]);
    }
}
