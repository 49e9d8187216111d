//! What a run comes to: per phase and per operation the latency percentiles
//! (from each arrival's due time), throughput and errors; the capacity at
//! each SLO (steady), the recovery after a spike, the drift of a soak;
//! freshness; a per-second timeline with the system's samples for the plots.
//! And the difference to a stored baseline.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::record::{Sample, Status, percentile};
use crate::sampler::{Fresh, SystemSample};
use crate::users::{OPS, Op};

/// The read clients' operations and the write clients' (indexes into [`OPS`]).
const READS: std::ops::RangeInclusive<u8> = Op::Stock as u8..=Op::LowStock as u8;
const WRITES: std::ops::RangeInclusive<u8> = Op::Receipt as u8..=Op::Consume as u8;

/// The planning documents' SLO: p95 under 500 ms and p99 under 1 s.
pub(crate) const SLO_P95_MS: f64 = 500.0;
pub(crate) const SLO_P99_MS: f64 = 1000.0;
/// Ours, for the read clients' requests (served from memory): p99 under 50 ms.
pub(crate) const FAST_P99_MS: f64 = 50.0;
/// More errors than this (share of arrivals) misses either SLO.
pub(crate) const MAX_ERROR_RATE: f64 = 0.01;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Latency {
    fn of_micros(mut values: Vec<u32>) -> Self {
        values.sort_unstable();
        let ms = |q: f64| f64::from(percentile(&values, q)) / 1000.0;
        Self { count: values.len() as u64, p50: ms(0.50), p95: ms(0.95), p99: ms(0.99), p999: ms(0.999), max: ms(1.0) }
    }

    fn of_ms(values: impl Iterator<Item = f64>) -> Self {
        Self::of_micros(values.map(|v| (v * 1000.0).round() as u32).collect())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PhaseSummary {
    pub(crate) name: String,
    pub(crate) seconds: f64,
    /// Arrivals per second the plan asked for (the mean over the phase).
    pub(crate) offered_per_s: f64,
    /// Answered without error per second.
    pub(crate) answered_per_s: f64,
    pub(crate) latency: Latency,
    /// The read clients' requests, the write clients' commands.
    #[serde(default)]
    pub(crate) reads: Latency,
    #[serde(default)]
    pub(crate) writes: Latency,
    pub(crate) errors: u64,
    pub(crate) error_rate: f64,
    pub(crate) statuses: BTreeMap<String, u64>,
    pub(crate) freshness: Latency,
    pub(crate) lag_records_max: Option<i64>,
    /// p95 < 500 ms, p99 < 1 s, errors < 1 %.
    pub(crate) slo: bool,
    /// Reads p99 < 50 ms, errors < 1 %.
    pub(crate) slo_fast: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct OpSummary {
    pub(crate) op: String,
    pub(crate) latency: Latency,
    pub(crate) statuses: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Capacity {
    /// The highest rate stepped through that kept p95 < 500 ms and p99 < 1 s.
    pub(crate) slo_per_s: Option<f64>,
    /// The highest that kept the reads' p99 < 50 ms.
    pub(crate) fast_per_s: Option<f64>,
    /// The highest rate stepped through (a capacity equal to it is a lower bound).
    pub(crate) highest_step_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Spike {
    pub(crate) base_p99_ms: f64,
    pub(crate) spike: Latency,
    /// The worst one-second p99 from the spike's start on.
    pub(crate) worst_second_p99_ms: f64,
    /// Seconds after the spike ended until the rolling 5-second p99 was back
    /// within max(1.2 × base, base + 20 ms) and stayed there; `None`: not in the run.
    pub(crate) latency_recovery_s: Option<f64>,
    /// Seconds after the spike ended until the projection's lag was back to
    /// what it was before the spike (plus 10 records) for 5 samples in a row.
    pub(crate) lag_recovery_s: Option<f64>,
    pub(crate) lag_records_max: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Soak {
    pub(crate) first: Latency,
    pub(crate) last: Latency,
    /// Per process: mean RSS (MB) in the first and last fifth, and the slope
    /// over the whole soak (MB per hour).
    pub(crate) rss: BTreeMap<String, (f64, f64, f64)>,
    /// What drifted (empty: nothing).
    pub(crate) drift: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Second {
    pub(crate) t: u32,
    pub(crate) arrivals: u32,
    pub(crate) errors: u32,
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) plan: String,
    pub(crate) command: String,
    pub(crate) started_at: String,
    pub(crate) machine: String,
    pub(crate) generator: String,
    pub(crate) mix: String,
    pub(crate) catalogue: String,
    pub(crate) phases: Vec<PhaseSummary>,
    pub(crate) operations: Vec<OpSummary>,
    pub(crate) freshness: Latency,
    pub(crate) accepted_commands: u64,
    pub(crate) refused_commands: u64,
    pub(crate) capacity: Option<Capacity>,
    pub(crate) spike: Option<Spike>,
    pub(crate) soak: Option<Soak>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) timeline: Vec<Second>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) system: Vec<SystemSample>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) fresh: Vec<Fresh>,
}

fn statuses<'a>(samples: impl Iterator<Item = &'a Sample>) -> BTreeMap<String, u64> {
    let mut map = BTreeMap::new();
    for s in samples {
        *map.entry(Status::name(s.status)).or_insert(0) += 1;
    }
    map
}

fn in_window(samples: &[Sample], from: f64, to: f64) -> impl Iterator<Item = &Sample> {
    samples.iter().filter(move |s| f64::from(s.due) >= from && f64::from(s.due) < to)
}

/// The figures of `samples` over `plan` (`phases_run` of its phases ran).
pub(crate) fn summarize(plan: &Plan, phases_run: usize, samples: &[Sample], system: Vec<SystemSample>, fresh: Vec<Fresh>) -> Summary {
    let mut summary = Summary { plan: plan.kind.name().into(), ..Summary::default() };
    for (index, phase) in plan.phases.iter().enumerate().take(phases_run) {
        let start = plan.offset_of(index);
        let (from, to) = (start + phase.warmup, start + phase.seconds);
        let seconds = to - from;
        let window: Vec<&Sample> = in_window(samples, from, to).collect();
        let errors = window.iter().filter(|s| Status::is_error(s.status)).count() as u64;
        let latency = Latency::of_micros(window.iter().map(|s| s.latency_us).collect());
        let of = |ops: std::ops::RangeInclusive<u8>| Latency::of_micros(window.iter().filter(|s| ops.contains(&s.op)).map(|s| s.latency_us).collect());
        let (reads, writes) = (of(READS), of(WRITES));
        let error_rate = if window.is_empty() { 0.0 } else { errors as f64 / window.len() as f64 };
        let ok = error_rate < MAX_ERROR_RATE && !window.is_empty();
        summary.phases.push(PhaseSummary {
            name: phase.name.clone(),
            seconds,
            offered_per_s: (phase.rate_at(phase.warmup) + phase.to) / 2.0,
            answered_per_s: (window.len() as u64 - errors) as f64 / seconds,
            slo: ok && latency.p95 < SLO_P95_MS && latency.p99 < SLO_P99_MS,
            slo_fast: ok && reads.p99 < FAST_P99_MS,
            latency,
            reads,
            writes,
            errors,
            error_rate,
            statuses: statuses(window.iter().copied()),
            freshness: Latency::of_ms(fresh.iter().filter(|f| f.t >= from && f.t < to).map(|f| f.ms)),
            lag_records_max: system.iter().filter(|s| s.t >= from && s.t < to).filter_map(|s| s.lag_records).max(),
        });
    }
    for (i, op) in OPS.iter().enumerate() {
        let of_op: Vec<&Sample> = samples.iter().filter(|s| usize::from(s.op) == i).collect();
        if !of_op.is_empty() {
            summary.operations.push(OpSummary {
                op: (*op).to_owned(),
                latency: Latency::of_micros(of_op.iter().map(|s| s.latency_us).collect()),
                statuses: statuses(of_op.iter().copied()),
            });
        }
    }
    summary.freshness = Latency::of_ms(fresh.iter().map(|f| f.ms));
    summary.timeline = timeline(samples, plan.offset_of(phases_run));
    match plan.kind {
        crate::plan::Kind::Steady => {
            let ran = &summary.phases;
            summary.capacity = Some(Capacity {
                slo_per_s: ran.iter().take_while(|p| p.slo).last().map(|p| p.offered_per_s),
                fast_per_s: ran.iter().take_while(|p| p.slo_fast).last().map(|p| p.offered_per_s),
                highest_step_per_s: ran.last().map_or(0.0, |p| p.offered_per_s),
            });
        }
        crate::plan::Kind::Spike if phases_run == 3 => summary.spike = Some(spike(plan, samples, &summary, &system)),
        crate::plan::Kind::Soak if phases_run == 1 => summary.soak = Some(soak(plan, samples, &system)),
        _ => {}
    }
    summary.system = system;
    summary.fresh = fresh;
    summary
}

fn timeline(samples: &[Sample], seconds: f64) -> Vec<Second> {
    let n = (seconds.ceil() as usize).max(1);
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut errors = vec![0u32; n];
    for s in samples {
        let t = (s.due as usize).min(n - 1);
        buckets[t].push(s.latency_us);
        errors[t] += u32::from(Status::is_error(s.status));
    }
    buckets
        .into_iter()
        .zip(errors)
        .enumerate()
        .map(|(t, (mut v, errors))| {
            v.sort_unstable();
            let ms = |q: f64| f64::from(percentile(&v, q)) / 1000.0;
            Second { t: t as u32, arrivals: v.len() as u32, errors, p50: ms(0.5), p95: ms(0.95), p99: ms(0.99) }
        })
        .collect()
}

fn spike(plan: &Plan, samples: &[Sample], summary: &Summary, system: &[SystemSample]) -> Spike {
    let spike_start = plan.offset_of(1);
    let spike_end = plan.offset_of(2);
    let end = plan.seconds();
    let base_p99 = summary.phases[0].latency.p99;
    let threshold = (base_p99 * 1.2).max(base_p99 + 20.0);
    let p99_of = |from: f64, to: f64| Latency::of_micros(in_window(samples, from, to).map(|s| s.latency_us).collect()).p99;
    // Recovered at t: every 5-second window of the next 15 s (or up to the end) is back under the threshold.
    let recovered_from = |t: f64| {
        let mut w = t;
        while w + 5.0 <= end.min(t + 15.0) + 1e-9 {
            if p99_of(w, w + 5.0) > threshold {
                return false;
            }
            w += 5.0;
        }
        true
    };
    let latency_recovery_s =
        (0..).map(|s| spike_end + f64::from(s)).take_while(|t| t + 5.0 <= end).find(|t| recovered_from(*t)).map(|t| t - spike_end);
    let base_lag = system.iter().filter(|s| s.t < spike_start).filter_map(|s| s.lag_records).max().unwrap_or(0);
    let after: Vec<&SystemSample> = system.iter().filter(|s| s.t >= spike_end).collect();
    let lag_recovery_s = (0..after.len())
        .find(|i| after.len() >= i + 5 && after[*i..].iter().take(5).all(|s| s.lag_records.is_some_and(|l| l <= base_lag + 10)))
        .map(|i| (after[i].t - spike_end).max(0.0));
    Spike {
        base_p99_ms: base_p99,
        spike: summary.phases[1].latency.clone(),
        worst_second_p99_ms: summary.timeline.iter().filter(|s| f64::from(s.t) >= spike_start).map(|s| s.p99).fold(0.0, f64::max),
        latency_recovery_s,
        lag_recovery_s,
        lag_records_max: system.iter().filter(|s| s.t >= spike_start).filter_map(|s| s.lag_records).max(),
    }
}

/// Our own processes: their memory must not grow under a constant load.
const SERVICES: [&str; 5] = ["command-service", "query-service", "projector", "worker", "notifier"];

fn soak(plan: &Plan, samples: &[Sample], system: &[SystemSample]) -> Soak {
    let phase = &plan.phases[0];
    let (from, to) = (phase.warmup, phase.seconds);
    let fifth = ((to - from) / 5.0).max(1.0);
    let latency = |a: f64, b: f64| Latency::of_micros(in_window(samples, a, b).map(|s| s.latency_us).collect());
    let (first, last) = (latency(from, from + fifth), latency(to - fifth, to));
    let mut drift = Vec::new();
    if last.p99 > first.p99 * 1.5 + 10.0 {
        drift.push(format!("latency: p99 {:.1} ms in the last fifth, {:.1} ms in the first", last.p99, first.p99));
    }
    let mut rss = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> = system.iter().flat_map(|s| s.processes.keys()).collect();
    for name in names {
        let points: Vec<(f64, f64)> =
            system.iter().filter(|s| s.t >= from && s.t < to).filter_map(|s| Some((s.t, s.processes.get(name)?.rss_mb))).collect();
        let mean = |a: f64, b: f64| {
            let v: Vec<f64> = points.iter().filter(|p| p.0 >= a && p.0 < b).map(|p| p.1).collect();
            if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
        };
        let (start, end) = (mean(from, from + fifth), mean(to - fifth, to));
        let slope = slope(&points) * 3600.0;
        if SERVICES.contains(&name.as_str()) && end > start * 1.2 + 16.0 {
            drift.push(format!("memory of {name}: {start:.0} MB → {end:.0} MB ({slope:+.0} MB/h)"));
        }
        rss.insert(name.clone(), (start, end, slope));
    }
    Soak { first, last, rss, drift }
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

fn pct_delta(now: f64, then: f64) -> String {
    if then == 0.0 { String::new() } else { format!(" ({:+.0} %)", (now - then) / then * 100.0) }
}

/// The run as Markdown tables.
pub(crate) fn render(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan {} — {}\n{}\n{}\nmix {}; {}\n", s.plan, s.started_at, s.machine, s.generator, s.mix, s.catalogue);
    let _ = writeln!(out, "| phase | offered/s | answered/s | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | reads p99 ms | writes p99 ms | errors | freshness p50 / p99 ms | lag max | SLO 500/1000 | reads p99 < 50 ms |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|");
    for p in &s.phases {
        let l = &p.latency;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {} ({:.2} %) | {:.0} / {:.0} | {} | {} | {} |",
            p.name, p.offered_per_s, p.answered_per_s, l.p50, l.p95, l.p99, l.p999, l.max, p.reads.p99, p.writes.p99, p.errors, p.error_rate * 100.0,
            p.freshness.p50, p.freshness.p99, p.lag_records_max.map_or("-".into(), |l| l.to_string()),
            if p.slo { "yes" } else { "no" }, if p.slo_fast { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out, "\n| operation | count | p50 ms | p95 ms | p99 ms | max ms | statuses |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
    for o in &s.operations {
        let l = &o.latency;
        let statuses: Vec<String> = o.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(out, "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} |", o.op, l.count, l.p50, l.p95, l.p99, l.max, statuses.join(", "));
    }
    let f = &s.freshness;
    let _ = writeln!(out, "\nfreshness (201 → visible in the query-service), {} samples: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", f.count, f.p50, f.p99, f.max);
    let _ = writeln!(out, "commands accepted {}, refused by a rule {}", s.accepted_commands, s.refused_commands);
    if let Some(c) = &s.capacity {
        let at = |v: Option<f64>| match v {
            Some(r) if r >= c.highest_step_per_s => format!("≥ {r:.0}/s (the highest step run)"),
            Some(r) => format!("{r:.0}/s"),
            None => "below the lowest step".into(),
        };
        let _ = writeln!(out, "capacity: p95 < 500 ms and p99 < 1 s up to {}; reads p99 < 50 ms up to {}", at(c.slo_per_s), at(c.fast_per_s));
    }
    if let Some(sp) = &s.spike {
        let secs = |v: Option<f64>| v.map_or("not within the run".into(), |v| format!("{v:.0} s"));
        let _ = writeln!(
            out,
            "spike: p99 before {:.1} ms, during {:.1} ms (worst second {:.0} ms); latency recovered {} after the spike, lag {} (lag max {})",
            sp.base_p99_ms, sp.spike.p99, sp.worst_second_p99_ms, secs(sp.latency_recovery_s), secs(sp.lag_recovery_s),
            sp.lag_records_max.map_or("-".into(), |l| l.to_string())
        );
    }
    if let Some(so) = &s.soak {
        let _ = writeln!(out, "soak: p99 first fifth {:.1} ms, last fifth {:.1} ms", so.first.p99, so.last.p99);
        let _ = writeln!(out, "\n| process | RSS first fifth MB | last fifth MB | slope MB/h |\n|---|---:|---:|---:|");
        for (name, (a, b, slope)) in &so.rss {
            let _ = writeln!(out, "| {name} | {a:.0} | {b:.0} | {slope:+.1} |");
        }
        let _ = writeln!(out, "\ndrift: {}", if so.drift.is_empty() { "none".to_owned() } else { so.drift.join("; ") });
    }
    out
}

/// What changed since `baseline` (a run of the same plan), one line each.
pub(crate) fn compare(now: &Summary, baseline: &Summary) -> String {
    let mut out = format!("compared with the baseline of {} ({}):\n", baseline.started_at, baseline.machine);
    let mut line = |what: String, n: f64, b: f64, unit: &str| {
        let _ = writeln!(out, "  {what}: {n:.1}{unit} (baseline {b:.1}{unit}, {:+.1}{unit}{})", n - b, pct_delta(n, b));
    };
    for p in &now.phases {
        let Some(b) = baseline.phases.iter().find(|b| b.name == p.name) else { continue };
        line(format!("{} p50", p.name), p.latency.p50, b.latency.p50, " ms");
        line(format!("{} p99", p.name), p.latency.p99, b.latency.p99, " ms");
        line(format!("{} reads p99", p.name), p.reads.p99, b.reads.p99, " ms");
        line(format!("{} writes p99", p.name), p.writes.p99, b.writes.p99, " ms");
        line(format!("{} answered/s", p.name), p.answered_per_s, b.answered_per_s, "");
        line(format!("{} errors", p.name), p.error_rate * 100.0, b.error_rate * 100.0, " %");
    }
    line("freshness p50".into(), now.freshness.p50, baseline.freshness.p50, " ms");
    line("freshness p99".into(), now.freshness.p99, baseline.freshness.p99, " ms");
    if let (Some(n), Some(b)) = (&now.capacity, &baseline.capacity) {
        line("capacity at 500/1000 ms".into(), n.slo_per_s.unwrap_or(0.0), b.slo_per_s.unwrap_or(0.0), "/s");
        line("capacity at reads p99 < 50 ms".into(), n.fast_per_s.unwrap_or(0.0), b.fast_per_s.unwrap_or(0.0), "/s");
    }
    if let (Some(n), Some(b)) = (&now.spike, &baseline.spike) {
        line("spike p99".into(), n.spike.p99, b.spike.p99, " ms");
        line("latency recovery".into(), n.latency_recovery_s.unwrap_or(f64::NAN), b.latency_recovery_s.unwrap_or(f64::NAN), " s");
        line("lag recovery".into(), n.lag_recovery_s.unwrap_or(f64::NAN), b.lag_recovery_s.unwrap_or(f64::NAN), " s");
    }
    if let (Some(n), Some(b)) = (&now.soak, &baseline.soak) {
        line("soak p99 last fifth".into(), n.last.p99, b.last.p99, " ms");
        for (name, (_, end, _)) in &n.rss {
            if let Some((_, b_end, _)) = b.rss.get(name) {
                line(format!("RSS {name}"), *end, *b_end, " MB");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{summarize, slope};
    use crate::plan::Plan;
    use crate::record::Sample;

    fn sample(due: f32, ms: u32, status: u16) -> Sample {
        Sample { due, latency_us: ms * 1000, status, op: 0 }
    }

    #[test]
    fn a_step_misses_the_slo_on_its_tail_or_its_errors() {
        let plan = Plan::steady(&[10.0, 20.0, 30.0], 10.0);
        let mut samples = Vec::new();
        for i in 0..100 {
            let t = i as f32 / 10.0;
            samples.push(sample(t, 5, 200));
            // Step two: 2 % of its answers take 2 s.
            samples.push(sample(10.0 + t, if i % 50 == 0 { 2000 } else { 20 }, 200));
            // Step three: fast, but 5 % are 503s.
            samples.push(sample(20.0 + t, 5, if i % 20 == 0 { 503 } else { 200 }));
        }
        let s = summarize(&plan, 3, &samples, vec![], vec![]);
        assert_eq!(s.phases.iter().map(|p| (p.slo, p.slo_fast)).collect::<Vec<_>>(), [(true, true), (false, false), (false, false)]);
        let capacity = s.capacity.unwrap();
        assert_eq!((capacity.slo_per_s, capacity.fast_per_s), (Some(10.0), Some(10.0)));
        // The warm-up (first 10/6 s of each step) is left out of its figures.
        assert!(s.phases[0].latency.count < 100);
    }

    #[test]
    fn spike_recovery_is_the_time_until_the_tail_is_back() {
        let plan = Plan::spike(10.0, 30.0, 10.0, 60.0);
        let mut samples = Vec::new();
        for i in 0..1000 {
            let t = i as f32 / 10.0;
            // Slow during the spike and for 12 s after it.
            let ms = if (30.0..52.0).contains(&t) { 800 } else { 10 };
            samples.push(sample(t, ms, 200));
        }
        let s = summarize(&plan, 3, &samples, vec![], vec![]);
        let spike = s.spike.unwrap();
        assert_eq!(spike.latency_recovery_s, Some(12.0));
        assert!(spike.spike.p99 >= 800.0);
    }

    #[test]
    fn slope_of_a_line() {
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), 0.0);
    }
}
