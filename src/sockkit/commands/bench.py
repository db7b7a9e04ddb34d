"""``sockkit bench models``: the server-model shoot-out (issue 5). ``make bench`` runs it with defaults."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sockkit.bench.measure import Session, raise_fd_limit
from sockkit.bench.scenarios import SCENARIOS
from sockkit.bench.summary import charts, check_targets, markdown, summarize
from sockkit.bench.targets import all_targets

QUICK_MODELS = ("uvloop", "thread")
QUICK_PEERS = ("bare-uvloop",)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: `sockkit bench models` compares every server model",
                                   description="Benchmarks.")
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    models = sub.add_parser(
        "models", help="every server model and the reference servers under the same loads",
        description="Start each server model (and bare reference servers with no sockkit code) in its own "
                    "process, drive it with sockkit load, and write JSON results, a Markdown table and PNG charts. "
                    f"Scenarios: {', '.join(f'{n} ({s.title})' for n, s in SCENARIOS.items())}.")
    models.add_argument("--scenarios", default=",".join(SCENARIOS), metavar="LIST",
                        help="comma-separated scenarios (default: all)")
    models.add_argument("--models", default=None, metavar="LIST", help="comma-separated sockkit models (default: all)")
    models.add_argument("--peers", default=None, metavar="LIST",
                        help="comma-separated reference servers, or 'none' (default: all available)")
    models.add_argument("--runs", type=int, default=5, metavar="N",
                        help="runs of the headline scenario, median reported (default %(default)s)")
    models.add_argument("--other-runs", type=int, default=3, metavar="N",
                        help="runs of every other scenario (default %(default)s)")
    models.add_argument("--duration", type=float, default=2.0, metavar="S",
                        help="measured seconds per run (default %(default)s)")
    models.add_argument("--warmup", type=float, default=0.3, metavar="S",
                        help="unmeasured seconds before each run (default %(default)s)")
    models.add_argument("--out", type=Path, default=Path("bench/results"), metavar="DIR",
                        help="where the JSON, Markdown and PNG files go (default bench/results)")
    models.add_argument("--no-charts", action="store_true", help="skip the matplotlib charts")
    models.add_argument("--quick", action="store_true",
                        help=f"smoke test: scenario short, models {','.join(QUICK_MODELS)}, peer "
                             f"{','.join(QUICK_PEERS)}, one 0.5 s run (each overridable)")
    models.set_defaults(handler=run_models)


def _pick(text: str | None, known: list[str], what: str) -> list[str]:
    if text is None:
        return known
    if text == "none":
        return []
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def _version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "-"


def run_models(args: argparse.Namespace) -> int:
    argv = sys.argv[1:]
    if args.quick:
        if "--scenarios" not in argv:
            args.scenarios = "short"
        if "--models" not in argv:
            args.models = ",".join(QUICK_MODELS)
        if "--peers" not in argv:
            args.peers = ",".join(QUICK_PEERS)
        if "--runs" not in argv:
            args.runs = 1
        if "--other-runs" not in argv:
            args.other_runs = 1
        if "--duration" not in argv:
            args.duration = 0.5
        if "--warmup" not in argv:
            args.warmup = 0.1
    targets = all_targets()
    try:
        scenarios = _pick(args.scenarios, list(SCENARIOS), "scenario")
        models = _pick(args.models, [n for n, t in targets.items() if t.kind == "model"], "model")
        peers = _pick(args.peers, [n for n, t in targets.items() if t.kind == "peer"], "peer")
        if args.runs < 1 or args.other_runs < 1 or args.duration <= 0 or args.warmup < 0:
            raise ValueError("--runs and --other-runs must be >= 1, --duration > 0, --warmup >= 0")
    except ValueError as exc:
        print(f"sockkit bench: {exc}", file=sys.stderr)
        return 2
    soft, hard = raise_fd_limit()
    try:
        import uvloop

        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = "-"
    environment = {"when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                   "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                   "uvloop": uvloop_version, "node": _version(["node", "--version"]) if shutil.which("node") else "-",
                   "kernel": platform.release(), "fd_limit": soft, "fd_hard_limit": hard,
                   "duration": args.duration, "warmup": args.warmup, "runs": args.runs, "other_runs": args.other_runs}
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"sockkit bench models: {len(scenarios)} scenario(s), {len(models)} model(s), {len(peers)} peer(s); "
          f"fd limit raised to {soft} (hard {hard})", flush=True)
    load_before = os.getloadavg()[0]
    if load_before > environment["cpus"] / 2:
        print(f"warning: load average {load_before:.1f} on {environment['cpus']} CPUs: other work is running and "
              "will show up in the figures", file=sys.stderr, flush=True)
    started = time.monotonic()
    records: list[dict] = []
    skipped: dict[str, dict[str, str]] = {}
    for name in scenarios:
        scenario = SCENARIOS[name]
        chosen = models + (peers if scenario.peers else [])
        runnable = []
        for target in chosen:
            why = scenario.skipped(target)
            if why:
                skipped.setdefault(name, {})[target] = why
            else:
                runnable.append(target)
        if peers and not scenario.peers:
            skipped.setdefault(name, {})["peers"] = "the peers are bare echoes without --delay-each"
        if scenario.idle and scenario.idle + 100 > soft:
            skipped.setdefault(name, {})["all"] = f"needs {scenario.idle + 100} descriptors, the limit is {soft}"
            continue
        runs = args.runs if scenario.headline else args.other_runs
        scenario_records = _run_scenario(scenario, [targets[t] for t in runnable], runs, args)
        (args.out / f"{name}.json").write_text(json.dumps(
            {"scenario": name, "title": scenario.title, "environment": environment, "records": scenario_records},
            indent=1))
        records += scenario_records
    rows = summarize(records)
    checks = check_targets(rows)
    environment["elapsed_s"] = round(time.monotonic() - started, 1)
    environment["loadavg_before"] = round(load_before, 2)
    environment["loadavg_max"] = max((r.get("loadavg", 0) for r in records), default=0)
    text = markdown(rows, checks, environment, skipped)
    (args.out / "results.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps({"environment": environment, "rows": rows, "targets": checks,
                                                       "skipped": skipped}, indent=1))
    written = [] if args.no_charts else charts(rows, args.out)
    print()
    print(text)
    print(f"wrote {args.out}/results.md, summary.json, {len(scenarios)} scenario JSON file(s)"
          + (", " + ", ".join(p.name for p in written) if written else "")
          + f" in {environment['elapsed_s']:.0f} s")
    return 0 if records and all(r.get("ok") for r in records) else 1


def _run_scenario(scenario, chosen: list, runs: int, args: argparse.Namespace) -> list[dict]:
    """Every target of a scenario, ``runs`` times, as fairly as a shared machine allows.

    Without idle connections all servers are started at once and measured in turn, round after round,
    each round starting one place further down the list: a noisy minute hits every target alike.
    With idle connections (thousands of descriptors each) the targets take turns instead.
    """
    records: list[dict] = []
    groups = [[target] for target in chosen] if scenario.idle else [chosen]
    for group in groups:
        sessions = [Session(target, scenario) for target in group]
        try:
            for session in sessions:
                session.open()
            for run in range(runs):
                shift = run % len(sessions)
                for session in sessions[shift:] + sessions[:shift]:
                    record = session.measure(args.duration, args.warmup)
                    record["run"] = run + 1
                    records.append(record)
                    print(_line(record, run + 1, runs), flush=True)
        finally:
            for session in sessions:
                note = session.close()
                if note:
                    for record in records:
                        if record["target"] == session.target.name:
                            record["stop_note"] = note
    return records


def _line(record: dict, run: int, runs: int) -> str:
    head = f"  {record['scenario']:<8} {run}/{runs} {record['target']:<20}"
    if not record.get("ok"):
        return f"{head} FAILED {record.get('error') or record.get('load', {}).get('requests', '')}"
    load = record["load"]
    idle = f"  idle {record['idle']['held']}" if "idle" in record else ""
    return (f"{head} {load['rps']:>9,.0f} req/s  p99 {load['latency_ms']['p99']:7.3f} ms  "
            f"server {record['server']['rss_mib']:.0f} MiB {record['server']['threads']} thr"
            f" {record['server']['processes']} proc{idle}")
