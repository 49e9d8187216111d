"""Plots and an HTML page from a load test's results.json.

    python loadtest/report.py docs/loadtests/steady

Writes latency.png, throughput.png, freshness.png, lag.png, memory.png,
cpu.png and index.html next to results.json (matplotlib, from PyPI into the
project's venv by scripts/loadtest.sh).
"""

import html
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERVICES = ["command-service", "query-service", "projector", "worker", "notifier"]
OTHERS = ["postgres", "redis-server", "tansu", "loadtest"]


def figure(title, ylabel):
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.set_title(title)
    ax.set_xlabel("seconds since the start of the run")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plots(s, out):
    tl = s["timeline"]
    t = [x["t"] for x in tl]
    made = []

    fig, ax = figure("Latency per second of due time (open loop, from each arrival's due time)", "ms (log scale)")
    busy = [x for x in tl if x["arrivals"] > 0]
    for key, label in (("p50", "p50"), ("p95", "p95"), ("p99", "p99")):
        ax.plot([x["t"] for x in busy], [max(x[key], 0.1) for x in busy], label=label, linewidth=1)
    ax.axhline(500, color="orange", linestyle="--", linewidth=0.8, label="SLO p95 500 ms")
    ax.axhline(1000, color="red", linestyle="--", linewidth=0.8, label="SLO p99 1 s")
    ax.axhline(50, color="green", linestyle=":", linewidth=0.8, label="reads p99 50 ms")
    ax.set_yscale("log")
    ax.legend(loc="upper left", fontsize=8)
    save(fig, out / "latency.png")
    made.append(("latency.png", "Latency percentiles per second"))

    fig, ax = figure("Arrivals and errors per second", "per second")
    ax.plot(t, [x["arrivals"] for x in tl], label="arrivals (offered)", linewidth=1)
    ax.plot(t, [x["errors"] for x in tl], label="errors (5xx, 429, no answer, stale, not sent)", linewidth=1, color="red")
    sysm = s.get("system", [])
    if sysm:
        ax.plot([x["t"] for x in sysm], [x["pg_commits_per_s"] for x in sysm], label="PostgreSQL commits/s", linewidth=1, alpha=0.7)
    ax.legend(loc="upper left", fontsize=8)
    save(fig, out / "throughput.png")
    made.append(("throughput.png", "Throughput, errors, PostgreSQL commits"))

    fresh = s.get("fresh", [])
    fig, ax = figure("Freshness: a command's 201 until the query-service serves it", "ms")
    ax.scatter([f["t"] for f in fresh], [f["ms"] for f in fresh], s=3)
    save(fig, out / "freshness.png")
    made.append(("freshness.png", "Freshness samples"))

    fig, ax = figure("Projection lag (GET /projection/status)", "records behind")
    ax.plot([x["t"] for x in sysm], [x.get("lag_records") or 0 for x in sysm], linewidth=1)
    save(fig, out / "lag.png")
    made.append(("lag.png", "Projector lag"))

    for metric, title, unit, name in (
        ("rss_mb", "Resident memory per process", "MB", "memory.png"),
        ("cpu", "CPU per process (100 = one core)", "% of a core", "cpu.png"),
    ):
        fig, ax = figure(title, unit)
        for proc in SERVICES + OTHERS:
            ys = [x["processes"].get(proc, {}).get(metric) for x in sysm]
            if any(y is not None for y in ys):
                ax.plot([x["t"] for x in sysm], [y or 0 for y in ys], label=proc, linewidth=1)
        ax.legend(loc="upper left", fontsize=7, ncol=3)
        save(fig, out / name)
        made.append((name, title))
    return made


def table(rows, header):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(s, made, out):
    phases = [
        (
            p["name"], f"{p['offered_per_s']:.0f}", f"{p['answered_per_s']:.0f}", f"{p['latency']['p50']:.1f}", f"{p['latency']['p95']:.1f}",
            f"{p['latency']['p99']:.1f}", f"{p['latency']['max']:.0f}", f"{p['reads']['p99']:.1f}", f"{p['writes']['p99']:.1f}",
            f"{p['error_rate'] * 100:.2f} %",
            f"{p['freshness']['p50']:.0f} / {p['freshness']['p99']:.0f}", "yes" if p["slo"] else "no", "yes" if p["slo_fast"] else "no",
        )
        for p in s["phases"]
    ]
    ops = [
        (o["op"], o["latency"]["count"], f"{o['latency']['p50']:.1f}", f"{o['latency']['p95']:.1f}", f"{o['latency']['p99']:.1f}",
         ", ".join(f"{k}: {v}" for k, v in o["statuses"].items()))
        for o in s["operations"]
    ]
    notes = []
    if s.get("capacity"):
        c = s["capacity"]
        fmt = lambda v: "below the lowest step" if v is None else (f"≥ {v:.0f}/s (highest step)" if v >= c["highest_step_per_s"] else f"{v:.0f}/s")
        notes.append(f"Capacity: p95 &lt; 500 ms and p99 &lt; 1 s up to {fmt(c['slo_per_s'])}; reads p99 &lt; 50 ms up to {fmt(c['fast_per_s'])}.")
    if s.get("spike"):
        sp = s["spike"]
        secs = lambda v: "not within the run" if v is None else f"{v:.0f} s"
        notes.append(
            f"Spike: p99 {sp['base_p99_ms']:.1f} ms before, {sp['spike']['p99']:.1f} ms during (worst second {sp['worst_second_p99_ms']:.0f} ms); "
            f"latency recovered {secs(sp['latency_recovery_s'])} after the spike, projection lag {secs(sp['lag_recovery_s'])}."
        )
    if s.get("soak"):
        so = s["soak"]
        notes.append(f"Soak: p99 {so['first']['p99']:.1f} ms in the first fifth, {so['last']['p99']:.1f} ms in the last; drift: "
                     + (html.escape("; ".join(so["drift"])) if so["drift"] else "none") + ".")
    f = s["freshness"]
    notes.append(f"Freshness (201 → served by the query-service), {f['count']} samples: p50 {f['p50']:.0f} ms, p99 {f['p99']:.0f} ms, max {f['max']:.0f} ms.")
    notes.append(f"Commands accepted {s['accepted_commands']}, refused by a rule {s['refused_commands']}.")
    imgs = "".join(f"<h3>{html.escape(title)}</h3><img src='{name}' alt='{html.escape(title)}'>" for name, title in made)
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Load test: {html.escape(s['plan'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}} img{{max-width:100%}}
code{{background:#f4f4f4;padding:2px 4px}}</style></head><body>
<h1>Load test: {html.escape(s['plan'])}</h1>
<p>Run {html.escape(s['started_at'])} with <code>{html.escape(s['command'])}</code></p>
<p>Machine: {html.escape(s['machine'])}</p>
<p>Generator: {html.escape(s['generator'])}</p>
<p>Mix: {html.escape(s['mix'])}. {html.escape(s['catalogue'])}</p>
<h2>Summary</h2>{''.join(f'<p>{n}</p>' for n in notes)}
<h2>Phases</h2>{table(phases, ['phase', 'offered/s', 'answered/s', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'reads p99 ms', 'writes p99 ms', 'errors', 'freshness p50/p99 ms', 'SLO 500/1000', 'reads p99 < 50 ms'])}
<h2>Operations</h2>{table(ops, ['operation', 'count', 'p50 ms', 'p95 ms', 'p99 ms', 'statuses'])}
<h2>Over time</h2>{imgs}
</body></html>
"""
    (out / "index.html").write_text(doc)


def main():
    out = Path(sys.argv[1])
    s = json.loads((out / "results.json").read_text())
    made = plots(s, out)
    page(s, made, out)
    print(f"report: {out / 'index.html'}")


if __name__ == "__main__":
    main()
