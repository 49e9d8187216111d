//! Faults under load. Each case runs the three services as processes with a
//! continuous load of mixed commands and reads ([`e2e::load`]), injects one
//! fault, measures the time to recovery, lets new work flow, and ends with
//! the three-way check ([`e2e::check::agree`]): every accepted command's
//! events in the store and on the topic once, the served read models equal
//! to a fold of the topic, nothing negative, and no client saw a 500, a hang
//! or a 503/504 without problem+json.
//!
//! Processes are killed with SIGKILL and started again with the same
//! settings. Servers that a case restarts or stops are the case's own
//! ([`testkit::servers`]); network cuts go through a proxy in front of the
//! server ([`testkit::proxy`]).
//!
//! `ERP_FAULT_SECS` sets the seconds of load before and after each fault
//! (3 by default, the compact variant `scripts/test.sh` runs;
//! `scripts/faults.sh` runs 30). Each case prints a `fault-report` line
//! with its recovery time, also appended as JSON to `ERP_FAULT_REPORT` when
//! that names a file.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use e2e::Service;
use e2e::check;
use e2e::load::{self, Accepted, Load};
use serde_json::json;
use sqlx::PgPool;
use testkit::proxy::TcpProxy;
use testkit::servers::{Broker, Postgres, Redis};
use testkit::{Servers, TestEnv, eventually};

const ARTICLES: usize = 12;
const WRITERS: usize = 8;
const READERS: usize = 2;
/// The longest a case waits for the system to recover (a liveness bound, not a target).
const RECOVER_WITHIN: Duration = Duration::from_secs(120);

fn phase() -> Duration {
    let secs = std::env::var("ERP_FAULT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    Duration::from_secs(secs)
}

/// Settings a case gives one of the services.
#[derive(Default)]
struct Extra {
    command: Vec<(&'static str, String)>,
    projector: Vec<(&'static str, String)>,
    query: Vec<(&'static str, String)>,
}

/// A running system under load.
struct Case {
    name: &'static str,
    /// The test's resources as the test reaches them (no proxy).
    env: TestEnv,
    pool: PgPool,
    command: Service,
    projectors: Vec<Service>,
    query: Service,
    load: Load,
    seeded: Vec<Accepted>,
}

impl Case {
    /// Starts the services on `services` (the test's resources as the
    /// services reach them) and `projectors` projector instances, seeds the
    /// articles and runs the load for a phase.
    async fn start(name: &'static str, env: TestEnv, services: &TestEnv, projectors: usize, extra: Extra) -> anyhow::Result<Self> {
        let pool = env.pool().await?;
        let command = Service::start("command-service", services, &extra.command).await?;
        let mut running = Vec::new();
        for _ in 0..projectors {
            running.push(Service::start("projector", services, &extra.projector).await?);
        }
        let query = Service::start("query-service", services, &extra.query).await?;
        let (articles, seeded) = load::seed(&command.base_url, ARTICLES).await?;
        let load = Load::start(&command.base_url, Some(&query.base_url), &articles, WRITERS, READERS);
        tokio::time::sleep(phase()).await;
        anyhow::ensure!(load.accepted() > 0, "{name}: no command was accepted before the fault");
        Ok(Self { name, env, pool, command, projectors: running, query, load, seeded })
    }

    /// Waits until every write accepted before `fault_end` is served by the
    /// query-service; returns the time from `fault_end` to that moment.
    async fn recovered(&self, fault_end: Instant) -> anyhow::Result<Duration> {
        let mut heads = self.load.heads();
        for a in &self.seeded {
            heads.entry(a.stream.clone()).or_insert(a.sequence);
        }
        check::visible(&self.query.base_url, &heads, RECOVER_WITHIN).await?;
        Ok(fault_end.elapsed())
    }

    /// The fault ended now: waits for the recovery, then [`Case::finish`].
    async fn recover_and_finish(self) -> anyhow::Result<()> {
        let fault_end = Instant::now();
        let recovery = self.recovered(fault_end).await?;
        self.finish(recovery, json!({})).await
    }

    /// Lets the load run another phase, checks that new commands were
    /// accepted and served, stops everything and runs the three-way check.
    async fn finish(self, recovery: Duration, details: serde_json::Value) -> anyhow::Result<()> {
        let recovered_at = Instant::now();
        tokio::time::sleep(phase()).await;
        let after = self.load.accepted_after(recovered_at);
        anyhow::ensure!(after > 0, "{}: no command was accepted after the recovery", self.name);
        let mut ledger = self.load.stop().await;
        ledger.accepted.extend(self.seeded);
        check::agree(&self.env, &self.pool, &self.query.base_url, &ledger).await?;
        let report = json!({
            "case": self.name,
            "recovery_ms": recovery.as_millis() as u64,
            "accepted": ledger.accepted.len(),
            "accepted_after_recovery": after,
            "refused": ledger.refused,
            "reads": ledger.reads,
            "broken_connections": ledger.broken_connections,
            "statuses": ledger.statuses,
            "details": details,
        });
        println!("fault-report {report}");
        if let Ok(path) = std::env::var("ERP_FAULT_REPORT") {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            writeln!(file, "{report}")?;
        }
        self.query.stop().await?;
        for p in self.projectors {
            p.stop().await?;
        }
        self.command.stop().await
    }
}

/// Waits until the only projector, at `url`, is ready; checks that it then
/// owns every partition (ready means applying); returns how long that took.
async fn ready_after(case: &Case, url: &str, since: Instant) -> anyhow::Result<Duration> {
    testkit::wait_ready(url, Duration::from_secs(30)).await?;
    let took = since.elapsed();
    let owners = owners(&case.pool, &case.env.kafka.events_topic).await.unwrap_or_default();
    anyhow::ensure!(
        owners.len() as i32 == case.env.kafka.partitions && owners.iter().collect::<BTreeSet<_>>().len() == 1,
        "the restarted projector said it was ready owning {owners:?}"
    );
    Ok(took)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projector_killed_under_load_resumes_at_once_and_applies_everything_exactly_once() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let mut case = Case::start("projector SIGKILL", env.clone(), &env, 1, Extra::default()).await?;
    case.projectors[0].crash().await?;
    case.projectors[0].respawn()?;
    let fault_end = Instant::now();
    let applying = ready_after(&case, &case.projectors[0].base_url, fault_end).await?;
    let recovery = case.recovered(fault_end).await?;
    case.finish(recovery, json!({ "ready_after_restart_ms": applying.as_millis() as u64 })).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projector_killed_twice_in_a_row_resumes_and_applies_everything_exactly_once() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let mut case = Case::start("projector SIGKILL twice", env.clone(), &env, 1, Extra::default()).await?;
    case.projectors[0].crash().await?;
    case.projectors[0].restart().await?;
    // Killed again while it catches up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    case.projectors[0].crash().await?;
    case.projectors[0].respawn()?;
    let fault_end = Instant::now();
    let applying = ready_after(&case, &case.projectors[0].base_url, fault_end).await?;
    let recovery = case.recovered(fault_end).await?;
    case.finish(recovery, json!({ "ready_after_restart_ms": applying.as_millis() as u64 })).await
}

/// The owners of the topic's partitions, by session pid.
async fn owners(pool: &PgPool, topic: &str) -> Option<Vec<i32>> {
    let mut conn = pool.acquire().await.ok()?;
    let view = platform::ownership::view(&mut conn, topic).await.ok()?;
    Some(view.owners.values().copied().collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn when_one_of_two_projectors_dies_the_other_takes_its_partitions_and_gives_them_back_later() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let mut case = Case::start("second projector takes over", env.clone(), &env, 2, Extra::default()).await?;
    let topic = env.kafka.events_topic.clone();
    let split = |owners: Vec<i32>| {
        let pids: BTreeSet<i32> = owners.iter().copied().collect();
        (owners.len() == 4 && pids.len() == 2 && pids.iter().all(|p| owners.iter().filter(|o| *o == p).count() == 2)).then_some(())
    };
    eventually(Duration::from_secs(30), "two instances with two partitions each", || async {
        split(owners(&case.pool, &topic).await?)
    })
    .await?;
    let gone = case.projectors.remove(1);
    gone.kill().await?;
    let fault_end = Instant::now();
    eventually(RECOVER_WITHIN, "the survivor to own every partition", || async {
        let owners = owners(&case.pool, &topic).await?;
        (owners.len() == 4 && owners.iter().collect::<BTreeSet<_>>().len() == 1).then_some(())
    })
    .await?;
    let taken_over = fault_end.elapsed();
    let recovery = case.recovered(fault_end).await?;
    // A new instance gets its share back while the load goes on.
    case.projectors.push(Service::start("projector", &env, &[]).await?);
    eventually(Duration::from_secs(30), "the partitions to be split again", || async {
        split(owners(&case.pool, &topic).await?)
    })
    .await?;
    case.finish(recovery, json!({ "taken_over_ms": taken_over.as_millis() as u64 })).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_service_killed_amid_group_commits_loses_no_accepted_command_and_applies_none_twice() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let mut case = Case::start("command-service SIGKILL", env.clone(), &env, 1, Extra::default()).await?;
    case.command.crash().await?;
    case.command.respawn()?;
    case.recover_and_finish().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_killed_while_it_publishes_resends_only_unconfirmed_records_and_nothing_is_lost() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let extra = Extra { command: vec![("APP_RELAY__ENABLED", "false".into())], ..Extra::default() };
    let case = Case::start("relay SIGKILL", env.clone(), &env, 1, extra).await?;
    // The relay in a process of its own, publishing in small rounds.
    let relay_settings = [("APP_RELAY__BATCH_SIZE", "20".to_owned())];
    let mut relay = Service::start("command-service", &env, &relay_settings).await?;
    tokio::time::sleep(phase()).await;
    let pending: i64 = sqlx::query_scalar("select count(*) from outbox where relayed_at is null").fetch_one(&case.pool).await?;
    relay.crash().await?;
    relay.respawn()?;
    let fault_end = Instant::now();
    let recovery = case.recovered(fault_end).await?;
    case.finish(recovery, json!({ "unrelayed_at_kill": pending })).await?;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_service_killed_under_load_serves_every_accepted_write_after_its_restart() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let mut case = Case::start("query-service SIGKILL", env.clone(), &env, 1, Extra::default()).await?;
    case.query.crash().await?;
    case.query.respawn()?;
    case.recover_and_finish().await
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_with_a_fast_shutdown_under_load_loses_nothing() -> anyhow::Result<()> {
    let pg = Postgres::start().await?;
    let servers = Servers { pg_admin_url: pg.admin_url(), ..Servers::shared() };
    let env = TestEnv::on(&servers, 4).await?;
    let case = Case::start("PostgreSQL fast restart", env.clone(), &env, 1, Extra::default()).await?;
    if let Err(e) = pg.restart_fast().await {
        anyhow::bail!("{e}\n{}", pg.log());
    }
    case.recover_and_finish().await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_empty_under_load_is_refilled_and_serves_every_accepted_write() -> anyhow::Result<()> {
    let mut redis = Redis::start().await?;
    let servers = Servers { redis_url: redis.url(), ..Servers::shared() };
    let env = TestEnv::on(&servers, 4).await?;
    let case = Case::start("Redis restarted empty", env.clone(), &env, 1, Extra::default()).await?;
    redis.restart_empty().await?;
    case.recover_and_finish().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_stopped_for_ten_seconds_under_load_loses_nothing() -> anyhow::Result<()> {
    let mut broker = Broker::start(testkit::free_port()).await?;
    let servers = Servers { brokers: broker.brokers(), ..Servers::shared() };
    let env = TestEnv::on(&servers, 4).await?;
    let case = Case::start("broker stopped 10 s", env.clone(), &env, 1, Extra::default()).await?;
    broker.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.resume().await?;
    case.recover_and_finish().await
}

/// How long each network cut lasts.
const CUT: Duration = Duration::from_secs(5);

/// `host:port` of a URL.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, a)| a).to_owned()
}

/// Runs a case whose services reach a server through `proxy`, and cuts
/// every connection through it for [`CUT`].
async fn cut(name: &'static str, env: TestEnv, services: &TestEnv, proxy: &TcpProxy) -> anyhow::Result<()> {
    let case = Case::start(name, env, services, 1, Extra::default()).await?;
    proxy.down();
    tokio::time::sleep(CUT).await;
    proxy.up();
    case.recover_and_finish().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_cut_between_the_services_and_postgres_heals_and_loses_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let proxy = TcpProxy::start(&authority(&env.database.url)).await?;
    let mut services = env.clone();
    services.database.url = proxy.url_for(&env.database.url);
    cut("network cut to PostgreSQL", env, &services, &proxy).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_cut_between_the_services_and_redis_heals_and_loses_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let proxy = TcpProxy::start(&authority(&env.redis.url)).await?;
    let mut services = env.clone();
    services.redis.url = proxy.url_for(&env.redis.url);
    cut("network cut to Redis", env, &services, &proxy).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_cut_between_the_services_and_the_broker_heals_and_loses_nothing() -> anyhow::Result<()> {
    // The broker tells clients to connect to the proxy, so every connection passes it.
    let listen = testkit::free_port();
    let proxy = TcpProxy::start(&format!("127.0.0.1:{listen}")).await?;
    let _broker = Broker::start_advertising(listen, proxy.port).await?;
    let servers = Servers { brokers: format!("127.0.0.1:{}", proxy.port), ..Servers::shared() };
    let env = TestEnv::on(&servers, 4).await?;
    cut("network cut to the broker", env.clone(), &env, &proxy).await
}
