"""Command-line face of the echo service (outside the sans-IO core: it may read the clock, and it
makes the line-memory pool's shared counter, before any model forks)."""

from __future__ import annotations

import argparse
import sys
import time

from sockkit import ofd
from sockkit.catalog import ServiceSpec
from sockkit.services.echo import DEFAULT_PORT, MAX_LINE, EchoService
from sockkit.services.line_memory import DEFAULT_LINE_MEMORY, LinePool, LocalUnits, units_for
from sockkit.sizes import parse_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    framing = parser.add_mutually_exclusive_group()
    framing.add_argument("--lines", action="store_true",
                         help="one reply per newline-terminated line (default: one per chunk received, as the "
                              "chapter's server)")
    framing.add_argument("--raw", action="store_true", help="echo bytes unchanged (RFC 862), no Echo=> prefix")
    parser.add_argument("--stamp", action="store_true", help="append ' at <server time>' to each reply, made when "
                                                             "it is sent")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                        help="simulate a slow request the chapter's way: each connection waits this long before "
                             "its first read (other clients never wait)")
    parser.add_argument("--delay-each", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long before every reply instead (each chunk, or each line with --lines)")
    parser.add_argument("--max-line", type=parse_size, default=MAX_LINE, metavar="BYTES",
                        help=f"longest line taken with --lines, in bytes or 512k, 2M ... (default {MAX_LINE >> 20}M)")
    parser.add_argument("--line-memory", type=parse_size, default=DEFAULT_LINE_MEMORY, metavar="BYTES",
                        help="with --lines: bytes all unfinished lines may hold together beyond each connection's "
                             f"first 64 KiB, server-wide, every model (default {DEFAULT_LINE_MEMORY >> 20} MiB; "
                             "0: no server-wide bound)")


def line_pool(limit: int) -> LinePool | None:
    """The pool for ``--line-memory``: shared by every process where OFD locks work, else per process."""
    if limit <= 0:
        return None
    try:
        counter = ofd.Units("sockkit-line-memory", units_for(limit))
    except (OSError, AttributeError):
        print("sockkit: OFD locks unavailable: --line-memory applies per process", file=sys.stderr)
        counter = LocalUnits(units_for(limit))
    return LinePool(limit, counter)


def build(args: argparse.Namespace) -> EchoService:
    if args.delay < 0 or args.delay_each < 0:
        raise ValueError("--delay and --delay-each must be zero or more")
    if args.max_line < 1 or args.line_memory < 0:
        raise ValueError("--max-line must be 1 or more and --line-memory zero (no bound) or more")
    return EchoService(raw=args.raw, lines=args.lines, delay=args.delay, delay_each=args.delay_each,
                       stamp=time.ctime if args.stamp else None, max_line=args.max_line,
                       line_pool=line_pool(args.line_memory) if args.lines else None)


SPEC = ServiceSpec(name="echo", help="the chapter's echo service (Echo=> replies)", default_port=DEFAULT_PORT,
                   add_arguments=add_arguments, build=build)
