//! Who applies which partition of the events topic: one PostgreSQL
//! session-level advisory lock per partition, held by the projector instance
//! that applies it, and one lock per running instance (its membership).
//!
//! The server releases a session's locks the moment the session ends, so a
//! projector killed with SIGKILL gives its partitions back as soon as the
//! kernel closes its socket (a host that vanishes: once TCP keepalive gives
//! up, see [`KEEPALIVE`]). Ownership therefore depends on no broker's group
//! coordinator (the local broker kept a killed member for good and never
//! assigned its partitions again). Offsets already live in PostgreSQL next
//! to the read models, so whoever takes a partition resumes exactly where
//! the last committed batch of the previous owner ended.
//!
//! Lock keys use the two-`int4` form: `(hashtext(namespace || topic), n)`,
//! with `n` the partition for ownership and the backend pid for membership.
//! The projector writes them ([`try_take`], [`release`], [`join`]); the
//! query-service's `/projection/status` and the projector's metrics read
//! them ([`view`]). This module is the only place that spells the keys.

use std::collections::BTreeMap;

use sqlx::PgConnection;

/// Namespace of the partition locks (followed by the topic name).
const PARTITION_NAMESPACE: &str = "erp-projector:partition:";
/// Namespace of the membership locks (followed by the topic name).
const MEMBER_NAMESPACE: &str = "erp-projector:member:";

/// Server-side TCP keepalive of an owning session: idle seconds, interval,
/// probes. A projector host that disappears without closing its connection
/// loses its locks after about 5 + 2 × 3 = 11 s instead of the kernel's
/// default two hours.
pub const KEEPALIVE: (u32, u32, u32) = (5, 2, 3);

/// The instances and partition owners of one topic, as PostgreSQL sees them now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Backend pids of the sessions of running projector instances, ascending.
    pub members: Vec<i32>,
    /// Partition → backend pid of the session that owns it.
    pub owners: BTreeMap<i32, i32>,
}

impl View {
    /// Partitions among `partitions` that no instance owns.
    pub fn unowned<'a>(&'a self, partitions: &'a [i32]) -> impl Iterator<Item = i32> + 'a {
        partitions.iter().copied().filter(|p| !self.owners.contains_key(p))
    }
}

/// Reads the members and owners of `topic` from `pg_locks`.
pub async fn view(conn: &mut PgConnection, topic: &str) -> Result<View, sqlx::Error> {
    let rows: Vec<(bool, i64, i32)> = sqlx::query_as(
        "select l.classid = hashtext($1 || $3)::oid, l.objid::int8, l.pid
         from pg_locks l
         where l.locktype = 'advisory' and l.objsubid = 2 and l.granted
           and l.database = (select oid from pg_database where datname = current_database())
           and l.classid in (hashtext($1 || $3)::oid, hashtext($2 || $3)::oid)",
    )
    .bind(MEMBER_NAMESPACE)
    .bind(PARTITION_NAMESPACE)
    .bind(topic)
    .fetch_all(conn)
    .await?;
    let mut view = View::default();
    for (member, key, pid) in rows {
        if member {
            view.members.push(pid);
        } else {
            view.owners.insert(key as i32, pid);
        }
    }
    view.members.sort_unstable();
    Ok(view)
}

/// Makes `conn` a member for `topic`: sets the keepalive of [`KEEPALIVE`] and
/// takes the membership lock. Returns the session's backend pid.
pub async fn join(conn: &mut PgConnection, topic: &str) -> Result<i32, sqlx::Error> {
    let (idle, interval, count) = KEEPALIVE;
    let keepalive = format!(
        "set tcp_keepalives_idle = {idle}; set tcp_keepalives_interval = {interval}; set tcp_keepalives_count = {count}"
    );
    sqlx::raw_sql(&keepalive).execute(&mut *conn).await?;
    let (pid,): (i32,) = sqlx::query_as("select pg_backend_pid()").fetch_one(&mut *conn).await?;
    sqlx::query("select pg_advisory_lock(hashtext($1 || $2), pg_backend_pid())")
        .bind(MEMBER_NAMESPACE)
        .bind(topic)
        .execute(&mut *conn)
        .await?;
    Ok(pid)
}

/// Tries to take `partition` of `topic` for `conn`'s session; true when taken.
pub async fn try_take(conn: &mut PgConnection, topic: &str, partition: i32) -> Result<bool, sqlx::Error> {
    let (taken,): (bool,) = sqlx::query_as("select pg_try_advisory_lock(hashtext($1 || $2), $3)")
        .bind(PARTITION_NAMESPACE)
        .bind(topic)
        .bind(partition)
        .fetch_one(conn)
        .await?;
    Ok(taken)
}

/// Gives `partition` of `topic` up (the session must hold it).
pub async fn release(conn: &mut PgConnection, topic: &str, partition: i32) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_unlock(hashtext($1 || $2), $3)")
        .bind(PARTITION_NAMESPACE)
        .bind(topic)
        .bind(partition)
        .execute(conn)
        .await?;
    Ok(())
}
