"""How a load result is shown: the human table, the live progress line, the JSON document."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from sockkit.load.histogram import Histogram
from sockkit.load.runner import LoadResult

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def latency_ms(hist: Histogram) -> dict[str, float]:
    """min, percentiles, max and mean in milliseconds (0 when nothing was recorded)."""
    out = {"min": hist.minimum / 1e6 if hist.total else 0.0}
    for name, percent in PERCENTILES:
        out[name] = hist.percentile(percent) / 1e6
    out["max"] = hist.maximum / 1e6
    out["mean"] = hist.mean / 1e6
    return out


def to_json(result: LoadResult, histograms: bool = False) -> dict:
    plan, stats = result.plan, result.stats
    elapsed = stats.elapsed or 1e-9
    doc = {
        "target": f"{plan.host}:{plan.port}",
        "mode": "raw" if plan.raw else "line",
        "connections": plan.connections,
        "sizes": list(plan.sizes),
        "processes": result.processes,
        "loop": "open" if plan.rate else "closed",
        "rate": plan.rate,
        "churn": plan.churn,
        "warmup_s": plan.warmup,
        "elapsed_s": round(stats.elapsed, 6),
        "requests": stats.requests,
        "rps": stats.requests / elapsed,
        "mb_per_s": stats.bytes / elapsed / 1e6,
        "latency_ms": latency_ms(stats.latency),
        "connect_ms": latency_ms(stats.connect),
        "connects": stats.connects,
        "refused": stats.refused,
        "reset": stats.reset,
        "timeouts": stats.timeouts,
        "wrong_replies": stats.wrong_replies,
        "closed_early": stats.closed_early,
        "errors": stats.errors,
        "client_cpu_s": stats.cpu,
        "client_cpu_per_request_us": stats.cpu / stats.requests * 1e6 if stats.requests else None,
        "cut_by_time_limit": result.cut,
    }
    if histograms:
        doc["latency_histogram_ns"] = stats.latency.to_dict()
    return doc


def table(result: LoadResult) -> str:
    doc = to_json(result)
    lat, con = doc["latency_ms"], doc["connect_ms"]
    sizes = ",".join(str(s) for s in doc["sizes"])
    how = f"open loop at {doc['rate']:g} req/s" if doc["rate"] else "closed loop"
    if doc["churn"]:
        how += ", a new connection per request"
    lines = [
        f"sockkit load {doc['target']}: {doc['connections']} connections x {sizes} B, {doc['mode']} echo, {how}, "
        f"{doc['processes']} process(es)",
        f"  requests     {doc['requests']:>12,} in {doc['elapsed_s']:.2f} s",
        f"  throughput   {doc['rps']:>12,.0f} req/s   {doc['mb_per_s']:10.2f} MB/s",
        "  latency ms   " + "  ".join(f"{k} {lat[k]:.3f}" for k in ("min", "p50", "p90", "p99", "p99.9", "max")),
        f"  connect ms   min {con['min']:.3f}  p50 {con['p50']:.3f}  p99 {con['p99']:.3f}  max {con['max']:.3f}"
        f"  ({doc['connects']:,} connects)",
        f"  failures     refused {doc['refused']}  reset {doc['reset']}  timeouts {doc['timeouts']}  "
        f"wrong replies {doc['wrong_replies']}  closed early {doc['closed_early']}  errors {doc['errors']}",
        f"  client CPU   {doc['client_cpu_s']:.2f} s" + (
            f"  ({doc['client_cpu_per_request_us']:.1f} us per request)" if doc["requests"] else ""),
    ]
    if doc["cut_by_time_limit"]:
        lines.append("  note: the run hit its wall-clock cap and was cut short")
    if doc["wrong_replies"]:
        lines.append(f"  note: {WRONG_REPLIES[doc['mode']]}")
    return "\n".join(lines)


#: Why replies come back wrong, most often: the server speaks another framing than the one loaded.
WRONG_REPLIES = {
    "raw": "--raw expects a byte-exact echo (sockkit serve echo --raw); the default serve echo adds 'Echo=>'",
    "line": "line mode expects one 'Echo=>...' line per line sent (sockkit serve echo --lines); the default "
            "serve echo answers each chunk it reads, as the chapter's server does, so long lines come back cut",
}


class ProgressLine:
    """A ``\\r`` line on a terminal: requests so far and the recent rate; silent when not a TTY."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.last_time = time.monotonic()
        self.last_count = 0
        self.shown = 0.0

    def __call__(self, requests: int, measuring: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.shown < 0.25:
            return
        rate = (requests - self.last_count) / max(1e-9, now - self.last_time) if requests >= self.last_count else 0
        self.last_time, self.last_count, self.shown = now, requests, now
        phase = "measuring" if measuring else "warming up"
        self.stream.write(f"\r  {phase}: {requests:,} requests, {rate:,.0f} req/s   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()
