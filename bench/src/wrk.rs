//! The HTTP load generator of the benchmarks: wrk, one thread, keep-alive
//! connections, a Lua script that makes each request. Written in C, it takes
//! little of the two cores the system under test shares with it.

use std::path::Path;

/// One wrk run: requests per second and latency percentiles in milliseconds,
/// and the CPU time the whole machine spent per request (every process:
/// the server, the databases, and wrk itself), in microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) per_second: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) cpu_us: f64,
}

/// The round with the median throughput.
pub(crate) fn median_load(loads: &[Load]) -> Load {
    let mut sorted = loads.to_vec();
    sorted.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    sorted[sorted.len() / 2]
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// CPU seconds the machine has spent busy (all cores, from /proc/stat).
fn busy_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: f64 = fields.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy / 100.0
}

/// Where wrk runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Placement {
    /// Pinned to this core (`taskset -c`).
    Core(u32),
    /// Wherever the scheduler puts it.
    Anywhere,
}

/// Runs wrk with `script` (Lua: defines `request`) against `base` for
/// `seconds` over `connections` connections. Fails if any answer was not 2xx.
pub(crate) async fn run(
    base: &str,
    script: &str,
    seconds: u64,
    connections: usize,
    placement: Placement,
) -> anyhow::Result<Load> {
    anyhow::ensure!(which("wrk"), "wrk is missing: scripts/bench.sh installs it (apt-get install wrk)");
    let file = std::env::temp_dir().join(format!("erp-bench-{}-{connections}.lua", std::process::id()));
    std::fs::write(&file, script)?;
    let mut command = match placement {
        Placement::Core(core) => {
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg("wrk");
            c
        }
        Placement::Anywhere => tokio::process::Command::new("wrk"),
    };
    let busy_before = busy_cpu_seconds();
    let output = command
        .args(["--latency", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(Path::new(&file))
        .arg(base)
        .output()
        .await?;
    let busy = busy_cpu_seconds() - busy_before;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(!text.contains("Non-2xx"), "non-2xx answers during the run:\n{text}");
    anyhow::ensure!(!text.contains("Socket errors"), "socket errors during the run:\n{text}");
    let value = |prefix: &str| -> anyhow::Result<f64> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .ok_or_else(|| anyhow::anyhow!("no {prefix} in wrk output:\n{text}"))?;
        let raw = line.trim_start().trim_start_matches(prefix).split_whitespace().next().unwrap_or_default();
        raw.parse::<f64>().ok().map_or_else(|| duration_ms(raw), Ok)
    };
    let per_second = value("Requests/sec:")?;
    let requests = per_second * seconds as f64;
    Ok(Load { per_second, p50: value("50%")?, p99: value("99%")?, cpu_us: busy * 1e6 / requests.max(1.0) })
}

/// wrk's latency figures: `412.00us`, `1.20ms`, `2.01s`.
fn duration_ms(raw: &str) -> anyhow::Result<f64> {
    let (number, factor) = if let Some(n) = raw.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = raw.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = raw.strip_suffix('s') {
        (n, 1000.0)
    } else {
        anyhow::bail!("unreadable wrk figure {raw:?}")
    };
    Ok(number.parse::<f64>()? * factor)
}

pub(crate) fn which(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::duration_ms;

    #[test]
    fn wrk_figures_are_read_in_milliseconds() {
        let close = |raw: &str, ms: f64| (duration_ms(raw).unwrap() - ms).abs() < 1e-9;
        assert!(close("412.00us", 0.412));
        assert!(close("1.20ms", 1.2));
        assert!(close("2.01s", 2010.0));
        assert!(duration_ms("fast").is_err());
    }
}
