"""``sockkit proxy LISTEN TARGET``: a TCP proxy that injects faults between a client and a server.

Rule: this module only turns flags into a ``ProxyFaults`` and runs a ``FaultProxy``; every fault
is decided in ``sockkit.proxy.faults`` and carried out in ``sockkit.proxy.relay``. Signal
handlers only set the stop event; the proxy closes its own sockets on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import signal
import sys
from decimal import Decimal

from sockkit.lifecycle import Log
from sockkit.net import BindError, is_loopback, split_host_port
from sockkit.ports import parse_port
from sockkit.proxy.faults import Faults, ProxyFaults
from sockkit.proxy.relay import DEFAULT_IDLE_SECONDS, FaultProxy, LoopError
from sockkit.sizes import parse_size, shown

DEFAULT_LISTEN_HOST = "127.0.0.1"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$", re.IGNORECASE)
#: Longest duration a flag takes (a day). Past it a number is a typo; the arithmetic is done in
#: Decimal so that no number, however long, overflows a float on the way to this message.
MAX_SECONDS = 86400


def parse_duration(text: str) -> float:
    """``50``, ``50ms`` -> 0.05 s; ``1.5s`` -> 1.5 s (a bare number is milliseconds); at most a day."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a duration: try 50, 50ms or 1.5s")
    value = Decimal(match.group(1))
    seconds = value if (match.group(2) or "ms").lower() == "s" else value / 1000
    if seconds > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{shown(text)} is too long a duration (at most {MAX_SECONDS} s)")
    return float(seconds)


def parse_seconds(text: str) -> float:
    """A positive number of seconds, at most a day (``--idle-timeout``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a number of seconds from 0 to {MAX_SECONDS}")
    return value


def parse_probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability between 0 and 1")
    return value


#: (Faults field, flag, parser, metavar, help): each also exists as --up-FLAG and --down-FLAG.
FAULT_FLAGS = [
    ("latency", "latency", parse_duration, "MS", "delay every chunk by this much (50, 50ms, 1.5s)"),
    ("jitter", "jitter", parse_duration, "MS", "vary each chunk's delay by up to ± this; order is kept"),
    ("rate", "rate", parse_size, "BYTES_PER_S", "bandwidth limit in bytes/s (512k, 1M)"),
    ("slice", "slice", parse_size, "N", "forward in writes of at most N bytes"),
    ("slice_delay", "slice-delay", parse_duration, "MS", "pause between two such writes"),
    ("stall_after", "stall-after", parse_size, "N",
     "forward N bytes, then swallow the rest and keep the connection open"),
    ("close_after", "close-after", parse_size, "N", "forward N bytes, then close both sides (FIN)"),
    ("reset_after", "reset-after", parse_size, "N", "forward N bytes, then reset both sides (RST)"),
]

EPILOG = """\
Directions: upstream (--up-*) is client -> TARGET, downstream (--down-*) is TARGET -> client.
A plain fault flag applies to both directions, each counted separately; --up-FLAG or
--down-FLAG (e.g. --down-close-after 100) applies to one direction and overrides the plain one.

Memory: a direction stops reading while 64 KiB wait to be written, so with latency L a
direction carries at most 64 KiB per L (as a 64 KiB TCP window would).

examples:
  sockkit proxy :9001 127.0.0.1:9000 --latency 50ms --jitter 10ms
  sockkit proxy 127.0.0.1:0 localhost:8000 --down-rate 512k --down-slice 100
  sockkit proxy 9001 127.0.0.1:9000 --down-reset-after 4096 --probability 0.3 --seed 1
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "proxy", help="TCP proxy that injects latency, rate limits, slicing, stalls, closes, resets",
        description="Relay TCP connections from LISTEN to TARGET, injecting faults on the way.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("listen", metavar="LISTEN",
                        help=f"where to listen: PORT, :PORT, HOST:PORT or [V6]:PORT (host {DEFAULT_LISTEN_HOST} "
                             "by default; port 0 picks a free one and the listening line shows it)")
    parser.add_argument("target", metavar="TARGET", help="where to connect each client: HOST:PORT")
    faults = parser.add_argument_group(
        "faults (both directions; --up-FLAG / --down-FLAG for one, e.g. --down-latency 20ms)")
    for field, flag, kind, metavar, text in FAULT_FLAGS:
        faults.add_argument(f"--{flag}", dest=f"both_{field}", type=kind, metavar=metavar, help=text)
        for scope in ("up", "down"):
            faults.add_argument(f"--{scope}-{flag}", dest=f"{scope}_{field}", type=kind, metavar=metavar,
                                help=argparse.SUPPRESS)
    parser.add_argument("--probability", type=parse_probability, default=1.0, metavar="P",
                        help="chance that a connection gets the faults; others pass untouched (default 1)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for --probability and --jitter, to repeat a run exactly")
    parser.add_argument("--idle-timeout", type=parse_seconds, default=DEFAULT_IDLE_SECONDS, metavar="SECONDS",
                        help="close a connection on which nothing moved either way for this long "
                             f"(default {DEFAULT_IDLE_SECONDS:g})")
    header = parser.add_mutually_exclusive_group()
    header.add_argument("--send-proxy", dest="send_proxy", action="store_const", const=1,
                        help="start each connection to TARGET with a PROXY protocol v1 header naming the client "
                             "(as HAProxy's send-proxy; TARGET must expect it: sockkit serve --proxy-protocol)")
    header.add_argument("--send-proxy-v2", dest="send_proxy", action="store_const", const=2,
                        help="the same with the binary version 2 header (HAProxy's send-proxy-v2)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow LISTEN on a non-loopback address (anyone who can reach it gets relayed)")
    parser.add_argument("--quiet", action="store_true", help="no line per connection")
    parser.set_defaults(handler=run)


def parse_listen(text: str) -> tuple[str, int]:
    """``9000``, ``:9000``, ``HOST:9000``, ``[::1]:9000`` -> (host, port); the host defaults to loopback."""
    if text.strip().isdigit():
        return DEFAULT_LISTEN_HOST, parse_port(text, listen=True)
    if text.startswith(":") and text[1:].isdigit():
        return DEFAULT_LISTEN_HOST, parse_port(text[1:], listen=True)
    return split_host_port(text, 0, listen=True)


def faults_from(args) -> ProxyFaults:
    def one(scope: str) -> Faults:
        values = {}
        for field, *_ in FAULT_FLAGS:
            value = getattr(args, f"{scope}_{field}")
            if value is None:
                value = getattr(args, f"both_{field}")
            if value is not None:
                values[field] = value
        return Faults(**values)

    return ProxyFaults(upstream=one("up"), downstream=one("down"), probability=args.probability)


def run(args) -> int:
    try:
        listen = parse_listen(args.listen)
        target = split_host_port(args.target, 0)
        if not target[1]:
            raise ValueError(f"TARGET {args.target!r} needs a port: HOST:PORT")
        faults = faults_from(args)
    except ValueError as exc:
        print(f"sockkit proxy: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(listen[0]) and not args.insecure:
        print(f"sockkit proxy: refusing to listen on {listen[0]!r}, which is not loopback: anyone who can "
              "reach it would be relayed to TARGET. Listen on 127.0.0.1 or pass --insecure.", file=sys.stderr)
        return 2
    log = Log(quiet=args.quiet)
    proxy = FaultProxy(target, faults, listen=listen, log=log.line, seed=args.seed, idle_timeout=args.idle_timeout,
                       send_proxy=args.send_proxy)
    try:
        return asyncio.run(_serve(proxy, log))
    except BindError as exc:
        print(f"sockkit proxy: {exc.strerror}", file=sys.stderr)
        return 1
    except LoopError as exc:
        print(f"sockkit proxy: {exc}", file=sys.stderr)
        return 2


async def _serve(proxy: FaultProxy, log: Log) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with proxy:
        print(f"proxy listening on {proxy.address_text} -> {proxy.target_text}", flush=True)
        log.line(f"faults: {proxy.faults.describe()}")
        if proxy.send_proxy:
            log.line(f"sending a PROXY protocol v{proxy.send_proxy} header before each client's bytes")
        await stop.wait()
        log.line("proxy: stopping")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run this command alone: ``python -m sockkit.commands.proxy LISTEN TARGET [flags]``."""
    parser = argparse.ArgumentParser(prog="sockkit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["proxy", *(sys.argv[1:] if argv is None else argv)])
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
