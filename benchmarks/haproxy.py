"""How many requests per second get through HAProxy to 1, 2 and 3 sockkit echo servers, here.

The deployment of deploy/haproxy/haproxy.cfg in private network namespaces (sockkit.balancer_lab):
HAProxy on the front, each echo server (uvloop, 1 KiB line echo) on a machine of its own, the load
client on another. Two loads, each for ``--duration`` seconds, ``--runs`` times, medians reported:
``kept``  50 connections kept open, closed loop (what HAProxy costs per request);
``churn`` a new connection per request, closed loop with 50 at once (what a connection costs:
          HAProxy's accept and connect, the PROXY header, the server's accept).
And the same loads straight to one server, without HAProxy (from HAProxy's machine, one hop away
as well), for the ratio.

On this machine every "machine" shares the same 2 CPUs: the figures show HAProxy's cost and that
more servers cannot add CPUs that are not there. On separate machines each server brings its own.

Usage: python benchmarks/haproxy.py [--duration 5] [--runs 3] [--out bench/results/haproxy.txt]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from sockkit import balancer_lab
from sockkit.balancer_lab import ECHO_PORT, BalancerLab
from sockkit.load.plan import LoadPlan
from sockkit.load.runner import run_load

LOADS = {"kept": {"connections": 50}, "churn": {"connections": 50, "churn": True}}


def measure(lab: BalancerLab, host: str, port: int, load: str, seconds: float) -> tuple[float, float, int]:
    """(requests/s, p99 ms, failures) of one run from the client machine (from HAProxy's, for a server
    reached directly: the client machine has a route to HAProxy only)."""
    where = lab.on_client() if host == lab.front else lab.net.inside(lab.net.front)
    with where:
        result = run_load(LoadPlan(host=host, port=port, duration=seconds, warmup=1.0, time_limit=seconds + 60,
                                   **LOADS[load]))
    stats = result.stats
    return stats.requests / stats.elapsed, stats.latency.percentile(99) / 1e6, stats.failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/haproxy.txt"))
    parser.add_argument("--no-proxy-protocol", dest="proxy_protocol", action="store_false",
                        help="HAProxy without send-proxy-v2, servers without --proxy-protocol")
    args = parser.parse_args(argv)
    reason = balancer_lab.unavailable()
    if reason:
        print(f"benchmarks/haproxy.py: cannot run here: {reason}", file=sys.stderr)
        return 1
    rows = []

    def run(lab: BalancerLab, name: str, host: str, servers: int) -> None:
        for load in LOADS:
            runs = [measure(lab, host, ECHO_PORT, load, args.duration) for _ in range(args.runs)]
            rate = statistics.median(run[0] for run in runs)
            p99 = statistics.median(run[1] for run in runs)
            failed = sum(run[2] for run in runs)
            rows.append((f"{name} -> {servers} server{'s' * (servers > 1)}", load, rate, p99, failed))
            print(f"{rows[-1][0]:<22} {load:<6} {rate:>9,.0f} req/s  p99 {p99:6.2f} ms  failed {failed}", flush=True)

    # The reference: one server reached straight, so without --proxy-protocol (it would want a header).
    with BalancerLab(1, proxy_protocol=False) as lab:
        run(lab, "direct", lab.machines[0].address, 1)
    for servers in (1, 2, 3):
        with BalancerLab(servers, proxy_protocol=args.proxy_protocol) as lab:
            run(lab, "HAProxy", lab.front, servers)
    title = (f"benchmarks/haproxy.py --duration {args.duration:g} --runs {args.runs}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; medians; 1 KiB line echo (uvloop), servers "
             + ("with --proxy-protocol behind HAProxy's send-proxy-v2" if args.proxy_protocol
                else "without the PROXY protocol"))
    lines = [title, f"{'path':<22} {'load':<6} {'req/s':>9}  {'p99 ms':>7}  failed", *(
        f"{path:<22} {load:<6} {rate:>9,.0f}  {p99:7.2f}  {failed}" for path, load, rate, p99, failed in rows)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
