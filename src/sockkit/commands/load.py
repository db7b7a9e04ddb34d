"""``sockkit load HOST:PORT``: measure an echo server (raw or the chapter's ``Echo=>`` lines)."""

from __future__ import annotations

import argparse
import json
import sys

from sockkit.load.plan import DEFAULT_TIME_LIMIT, LoadPlan, parse_sizes
from sockkit.load.report import ProgressLine, table, to_json
from sockkit.load.runner import run_load
from sockkit.ports import parse_port


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "load", help="load-test an echo server: req/s, latency percentiles, errors",
        description="Drive an echo server with N connections (closed loop) or at a fixed rate (open loop) "
                    "and report requests/s, MB/s, latency percentiles, connect time, errors and client CPU. "
                    "Every run is bounded: give --duration and/or --requests.")
    parser.add_argument("target", metavar="HOST:PORT", help="the echo server, e.g. 127.0.0.1:50007 or [::1]:50007")
    parser.add_argument("--connections", "-c", type=int, default=10, metavar="N", help="connections (default 10)")
    parser.add_argument("--size", "-s", default="1024", metavar="BYTES",
                        help="message size, or a mix used in turn, e.g. 64,1024,65536 (default 1024)")
    parser.add_argument("--duration", "-d", type=float, default=None, metavar="S", help="seconds of measured load")
    parser.add_argument("--requests", "-n", type=int, default=None, metavar="N", help="requests to complete")
    parser.add_argument("--rate", type=float, default=None, metavar="R",
                        help="open loop: R requests/s in total on a fixed schedule, latency from the intended send")
    parser.add_argument("--processes", "-P", type=int, default=1, metavar="P",
                        help="worker processes, each with its own event loop (default 1)")
    parser.add_argument("--raw", action="store_true", help="byte-exact echo (sockkit serve echo --raw, RFC 862); "
                                                           "default: Echo=> lines, each checked (serve echo --lines)")
    parser.add_argument("--verify", action="store_true", help="raw mode: also check every reply byte")
    parser.add_argument("--churn", action="store_true",
                        help="a new connection for every request (with --rate: each request due opens its own, "
                             "at most --connections at once)")
    parser.add_argument("--warmup", type=float, default=0.0, metavar="S", help="unmeasured seconds first")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="a reply (or connect) later than this counts as a timeout (default 5)")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, metavar="S",
                        help="hard wall-clock cap for the whole run (default %(default)g)")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="event loop (default: uvloop when installed)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.set_defaults(handler=run)


def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, parse_port(port)


def run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_target(args.target)
        plan = LoadPlan(host=host, port=port, connections=args.connections, sizes=parse_sizes(args.size),
                        duration=args.duration, requests=args.requests, rate=args.rate, raw=args.raw,
                        verify=args.verify, warmup=args.warmup, churn=args.churn, timeout=args.timeout,
                        connect_timeout=args.timeout, time_limit=args.time_limit, loop=args.loop)
        progress = ProgressLine()
        try:
            result = run_load(plan, args.processes, progress)
        finally:
            progress.close()
    except ValueError as exc:
        print(f"sockkit load: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(to_json(result)))
    else:
        print(table(result))
    return 0 if result.stats.requests and not result.stats.failures else 1
