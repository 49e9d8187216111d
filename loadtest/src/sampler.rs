//! What is measured alongside the load, once a second: CPU and resident
//! memory of every process of the system (by name, from /proc: the
//! services, PostgreSQL's processes together, Redis, the broker, the
//! generator itself), the machine's busy CPU, PostgreSQL's connections and
//! commits per second, and the projection's lag as the query-service reports
//! it. And, continuously, freshness: the time from a command's answer until
//! the query-service serves what it wrote.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken as Cancel;

/// Processes watched, by the name the kernel knows them by (at most 15 characters).
pub(crate) const PROCESSES: [&str; 9] =
    ["command-service", "query-service", "projector", "worker", "notifier", "postgres", "redis-server", "tansu", "loadtest"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Usage {
    /// Percent of one core.
    pub(crate) cpu: f64,
    pub(crate) rss_mb: f64,
    pub(crate) processes: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SystemSample {
    /// Seconds since the run started.
    pub(crate) t: f64,
    /// Percent of the whole machine (all cores) busy.
    pub(crate) machine_cpu: f64,
    pub(crate) processes: BTreeMap<String, Usage>,
    pub(crate) pg_connections: i64,
    pub(crate) pg_active: i64,
    pub(crate) pg_commits_per_s: f64,
    /// Records the projector is behind the end of the topic, and the age of
    /// its last applied record while behind (`GET /projection/status`).
    pub(crate) lag_records: Option<i64>,
    pub(crate) lag_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Fresh {
    /// When the command was answered, in seconds since the run started.
    pub(crate) t: f64,
    pub(crate) ms: f64,
}

/// Ticks of CPU time and resident bytes of each watched process group.
fn read_processes() -> BTreeMap<&'static str, (u64, u64, usize)> {
    let mut groups: BTreeMap<&'static str, (u64, u64, usize)> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return groups };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
        let Some(group) = PROCESSES.iter().find(|p| **p == comm.trim_end()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
        let ticks: u64 = fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        let rss_pages: u64 = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|s| s.split(' ').nth(1).and_then(|f| f.parse().ok()))
            .unwrap_or(0);
        let g = groups.entry(group).or_default();
        g.0 += ticks;
        g.1 += rss_pages * 4096;
        g.2 += 1;
    }
    groups
}

/// Busy and total jiffies of the machine (/proc/stat).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The query-service the samplers read, with a key, and when the run started.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) http: reqwest::Client,
    pub(crate) query_url: String,
    pub(crate) key: String,
    pub(crate) start: Instant,
}

/// Samples once a second until `stop`.
pub(crate) async fn system(pool: PgPool, target: Target, stop: Cancel) -> Vec<SystemSample> {
    let Target { http, query_url, key, start } = target;
    let mut samples = Vec::new();
    let mut before = (Instant::now(), read_processes(), machine_ticks(), commits(&pool).await.map(|c| c.2).unwrap_or(0));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    while !stop.is_cancelled() {
        tick.tick().await;
        let now = Instant::now();
        let processes = read_processes();
        let machine = machine_ticks();
        let dt = now.duration_since(before.0).as_secs_f64();
        let mut sample = SystemSample { t: now.duration_since(start).as_secs_f64(), ..SystemSample::default() };
        let (busy, total) = (machine.0.saturating_sub(before.2.0), machine.1.saturating_sub(before.2.1));
        sample.machine_cpu = if total > 0 { 100.0 * busy as f64 / total as f64 } else { 0.0 };
        for (name, (ticks, rss, count)) in &processes {
            let earlier = before.1.get(name).map_or(*ticks, |b| b.0);
            // 100 ticks a second (USER_HZ); a process that exited takes its ticks with it.
            let cpu = ticks.saturating_sub(earlier) as f64 / dt;
            sample.processes.insert((*name).to_owned(), Usage { cpu, rss_mb: *rss as f64 / 1_048_576.0, processes: *count });
        }
        if let Ok((connections, active, committed)) = commits(&pool).await {
            sample.pg_connections = connections;
            sample.pg_active = active;
            sample.pg_commits_per_s = committed.saturating_sub(before.3) as f64 / dt;
            before.3 = committed;
        }
        if let Ok(response) = http.get(format!("{query_url}/projection/status")).bearer_auth(&key).send().await
            && let Ok(status) = response.json::<Value>().await
        {
            sample.lag_records = status["lag"].as_i64();
            sample.lag_seconds = status["lag_seconds"].as_f64();
        }
        samples.push(sample);
        before = (now, processes, machine, before.3);
    }
    samples
}

/// Connections to the run's database, those active, and its commits so far.
async fn commits(pool: &PgPool) -> Result<(i64, i64, u64), sqlx::Error> {
    let (connections, active, committed): (i32, i64, i64) = sqlx::query_as(
        "select numbackends, (select count(*) from pg_stat_activity a where a.datname = d.datname and state = 'active'), xact_commit
         from pg_stat_database d where datname = current_database()",
    )
    .fetch_one(pool)
    .await?;
    Ok((i64::from(connections), active, committed as u64))
}

/// A command to follow: article, sequence, when its answer arrived.
pub(crate) type Probe = (String, u64, Instant);

/// Follows one accepted command at a time (handed over by the write path the
/// moment its answer arrives, at most every `every`): reads the article's
/// stock from the query-service every 5 ms until the version includes it.
pub(crate) async fn freshness(
    target: Target,
    mut probes: mpsc::Receiver<Probe>,
    armed: Arc<std::sync::atomic::AtomicBool>,
    every: Duration,
    stop: Cancel,
) -> Vec<Fresh> {
    let Target { http, query_url, key, start } = target;
    let mut seen = Vec::new();
    armed.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some((article, sequence, answered)) = tokio::select! {
        p = probes.recv() => p,
        () = stop.cancelled() => None,
    } {
        let url = format!("{query_url}/articles/{article}/stock");
        let deadline = answered + Duration::from_secs(60);
        while Instant::now() < deadline && !stop.is_cancelled() {
            let version = match http.get(&url).bearer_auth(&key).send().await {
                Ok(r) if r.status() == 200 => r.json::<Value>().await.ok().and_then(|d| d["version"].as_u64()),
                _ => None,
            };
            if version.is_some_and(|v| v >= sequence) {
                seen.push(Fresh { t: answered.duration_since(start).as_secs_f64(), ms: answered.elapsed().as_secs_f64() * 1000.0 });
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(every).await;
        armed.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    seen
}
