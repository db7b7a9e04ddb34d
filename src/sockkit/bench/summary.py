"""Medians, ratios against the peers, the issue's targets, the Markdown table and the PNG charts."""

from __future__ import annotations

import statistics
from pathlib import Path

from sockkit.bench.scenarios import SCENARIOS
from sockkit.catalog import MODELS

MALLOC_NOTE = ("Python peers run with `MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_TRIM_THRESHOLD_=4194304`, the glibc "
               "tuning sockkit's servers apply to themselves (without it, 256 KiB receive buffers are mmap'ed and "
               "unmapped on every read).")


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(records: list[dict]) -> dict[str, list[dict]]:
    """Scenario -> one row per target: medians over the runs that worked, in measurement order."""
    by_key: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        by_key.setdefault((rec["scenario"], rec["target"]), []).append(rec)
    rows: dict[str, list[dict]] = {}
    for (scenario, target), recs in by_key.items():
        good = [r for r in recs if r.get("ok")]
        load = [r["load"] for r in good]
        server = [r["server"] for r in good]
        row = {"target": target, "kind": recs[0]["kind"], "runs": len(recs), "ok_runs": len(good),
               "rps": _median([d["rps"] for d in load]),
               "rps_runs": [round(d["rps"]) for d in load],
               "p50_ms": _median([d["latency_ms"]["p50"] for d in load]),
               "p99_ms": _median([d["latency_ms"]["p99"] for d in load]),
               "p999_ms": _median([d["latency_ms"]["p99.9"] for d in load]),
               "connect_p99_ms": _median([d["connect_ms"]["p99"] for d in load]),
               "failures": sum(d["refused"] + d["reset"] + d["timeouts"] + d["wrong_replies"] + d["closed_early"]
                               + d["errors"] for d in load),
               "client_cpu_s": _median([d["client_cpu_s"] for d in load]),
               "server_cpu_cores": _median([s.get("cpu_cores") for s in server]),
               "server_us_per_request": _median([s.get("cpu_us_per_request") for s in server]),
               "rss_mib": _median([s["rss_mib"] for s in server]),
               "pss_mib": _median([s.get("pss_mib") for s in server]),
               "threads": _median([s["threads"] for s in server]),
               "processes": _median([s["processes"] for s in server]),
               "loadavg_max": max((r.get("loadavg", 0) for r in recs), default=0),
               "idle_held": _median([r["idle"]["held"] for r in good if "idle" in r]),
               "errors": sorted({r["error"] for r in recs if "error" in r}),
               "notes": sorted({r["stop_note"] for r in recs if "stop_note" in r})}
        rows.setdefault(scenario, []).append(row)
    for scenario_rows in rows.values():
        by_name = {r["target"]: r for r in scenario_rows}
        node = by_name.get("node-net", {}).get("rps")
        for row in scenario_rows:
            model = MODELS.get(row["target"]) if row["kind"] == "model" else None
            peer = model.bench_peer if model is not None else None
            peer_rps = by_name.get(peer, {}).get("rps") if peer else None
            row["peer"] = peer if peer_rps else None
            row["vs_peer"] = row["rps"] / peer_rps if row["rps"] and peer_rps else None
            row["vs_node"] = row["rps"] / node if row["rps"] and node else None
            peer_cost = by_name.get(peer, {}).get("server_us_per_request") if peer else None
            mine = row["server_us_per_request"]
            row["cost_vs_peer"] = mine / peer_cost if mine and peer_cost else None
    return rows


def check_targets(rows: dict[str, list[dict]]) -> list[dict]:
    """The issue's targets, each with the measured figure and whether it holds."""
    def get(scenario: str, target: str, key: str):
        for row in rows.get(scenario, []):
            if row["target"] == target:
                return row.get(key)
        return None

    checks = []

    def ratio_check(model: str, peer: str, needed: float) -> None:
        mine, theirs = get("short", model, "rps"), get("short", peer, "rps")
        cost = get("short", model, "cost_vs_peer")
        if mine and theirs:
            extra = f" (server CPU per request {cost:.2f} x the peer's)" if cost else ""
            checks.append({"target": f"{model} >= {needed:g} x {peer} (short)", "value": mine / theirs,
                           "text": f"{mine / theirs:.2f} x{extra}", "met": mine / theirs >= needed})

    ratio_check("uvloop", "bare-uvloop", 0.9)
    ratio_check("asyncio", "bare-asyncio", 0.9)
    ratio_check("select", "bare-selectors", 1.0)
    ratio_check("thread", "threading-tcpserver", 1.0)
    ratio_check("pool", "threading-tcpserver", 1.0)
    models = [r for r in rows.get("short", []) if r["kind"] == "model" and r["rps"]]
    node = get("short", "node-net", "rps")
    if models and node:
        best = max(models, key=lambda r: r["rps"])
        checks.append({"target": "fastest sockkit model ahead of node-net (short)", "value": best["rps"] / node,
                       "text": f"{best['target']} {best['rps'] / node:.2f} x", "met": best["rps"] > node})
    for model in ("select", "asyncio", "uvloop"):
        base, idle = get("short", model, "p99_ms"), get("idle10k", model, "p99_ms")
        held = get("idle10k", model, "idle_held")
        if base and idle:
            ok = idle <= 2 * base and (held or 0) >= 10_000
            checks.append({"target": f"{model}: 10,000 idle held, active p99 <= 2 x p99 at 10 connections",
                           "value": idle / base, "met": ok,
                           "text": f"{held or 0:,.0f} held, p99 {idle:.3f} vs {base:.3f} ms ({idle / base:.2f} x)"})
    return checks


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def markdown(rows: dict[str, list[dict]], checks: list[dict], environment: dict, skipped: dict) -> str:
    out = ["# sockkit bench models", "",
           f"{environment['when']} · {environment['cpus']} CPUs · Python {environment['python']} · "
           f"uvloop {environment['uvloop']} · node {environment['node']} · fd limit {environment['fd_limit']} · "
           f"{environment['duration']:g} s per run after {environment['warmup']:g} s warmup · headline: median of "
           f"{environment['runs']} runs, others {environment['other_runs']} · load average "
           f"{environment['loadavg_before']:g} before, at most {environment['loadavg_max']:g} during · "
           f"took {environment['elapsed_s']:.0f} s", "",
           "Load: `sockkit load --raw` (closed loop, uvloop client in one process). The servers of a scenario "
           "run side by side and are measured in turn, round after round (the start rotating), so noise from "
           "other work falls on all of them alike; idle-connection scenarios take one server at a time. "
           "Every ratio is against a peer "
           "measured in the same run: `vs peer` = this model / its like-for-like reference server "
           "(uvloop, prefork → bare-uvloop; asyncio → bare-asyncio; select → bare-selectors; thread, pool, "
           "socketserver, fork → threading-tcpserver); `vs node` = / Node.js `net`. "
           "`threading-tcpserver-1cpu` is the same peer kept on one CPU, as sockkit's thread models are by "
           "default (`serve --cpus`): compare the thread models with it to see the model apart from the "
           "pinning.", ""]
    for name, scenario in SCENARIOS.items():
        if name not in rows:
            continue
        out += [f"## {name}: {scenario.title}", "",
                "| target | req/s | vs peer | vs node | p50 ms | p99 ms | p99.9 ms | server CPU | server µs/req "
                "| cost vs peer | memory MiB | threads | procs | failures |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in rows[name]:
            label = row["target"] if row["kind"] == "model" else f"*{row['target']}*"
            if row["idle_held"] is not None:
                label += f" ({row['idle_held']:,.0f} idle)"
            out.append(
                f"| {label} | {_fmt(row['rps'], ',.0f')} | {_fmt(row['vs_peer'], '.2f')} | "
                f"{_fmt(row['vs_node'], '.2f')} | {_fmt(row['p50_ms'], '.3f')} | {_fmt(row['p99_ms'], '.3f')} | "
                f"{_fmt(row['p999_ms'], '.3f')} | {_fmt(row['server_cpu_cores'], '.2f')} | "
                f"{_fmt(row['server_us_per_request'], '.1f')} | {_fmt(row['cost_vs_peer'], '.2f')} | "
                f"{_fmt(row['pss_mib'], '.1f')} | {_fmt(row['threads'], '.0f')} | {_fmt(row['processes'], '.0f')} | "
                f"{row['failures']}{' ' + '; '.join(row['errors']) if row['errors'] else ''} |")
        notes = skipped.get(name)
        if notes:
            out += ["", "Not run: " + "; ".join(f"`{t}` ({why})" for t, why in notes.items()) + "."]
        out.append("")
    if checks:
        out += ["## The issue's targets", "", "| target | measured | met |", "|---|---|---|"]
        out += [f"| {c['target']} | {c['text']} | {'yes' if c['met'] else '**no**'} |" for c in checks]
        out.append("")
    out += ["Notes: peers in *italics*. " + MALLOC_NOTE + " `pool` runs with `--workers max(16, connections)` "
            "(a worker stays with one client). Server CPU is in cores (CPU seconds / wall seconds, reaped children "
            "included) over the measured window; server µs/req is that CPU per request served, the figure least "
            "disturbed by other work on the machine (it measures cost, not speed). "
            "Memory is PSS (proportional set size: copy-on-write pages shared by forked children are "
            "counted once); memory, threads and processes are summed over the server and its children, the peak of "
            "samples taken during the run. This machine has 2 cores shared by the server, the load client and "
            "anything else running: compare figures within one table, not across runs.", ""]
    return "\n".join(out)


def charts(rows: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """PNG charts: the headline (req/s and p99 per target) and every scenario's req/s and p99."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    colours = {"model": "#3572b0", "peer": "#b0b0b0"}

    def bars(ax, scenario_rows, key, title, fmt):
        shown = [r for r in scenario_rows if r[key] is not None]
        shown.sort(key=lambda r: r[key])
        names = [r["target"] for r in shown]
        values = [r[key] for r in shown]
        ax.barh(names, values, color=[colours[r["kind"]] for r in shown])
        for y, value in enumerate(values):
            ax.text(value, y, " " + format(value, fmt), va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.margins(x=0.18)

    if "short" in rows:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
        bars(left, rows["short"], "rps", "requests/s (higher is better)", ",.0f")
        bars(right, rows["short"], "p99_ms", "p99 latency, ms (lower is better)", ".3f")
        fig.suptitle("sockkit bench models: 10 connections x 1 KiB raw echo (blue: sockkit models, grey: peers)",
                     fontsize=10)
        fig.tight_layout()
        path = out_dir / "short.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    for key, label, fmt in (("rps", "requests/s", ",.0f"), ("p99_ms", "p99 ms", ".2f")):
        names = [n for n in SCENARIOS if n in rows]
        if not names:
            continue
        cols = 2
        lines = (len(names) + cols - 1) // cols
        fig, axes = plt.subplots(lines, cols, figsize=(12, 3.6 * lines), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            bars(ax, rows[name], key, f"{name}: {SCENARIOS[name].title} — {label}", fmt)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.tight_layout()
        path = out_dir / f"scenarios-{'rps' if key == 'rps' else 'p99'}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
