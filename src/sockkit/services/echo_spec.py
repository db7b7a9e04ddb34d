"""Command-line face of the echo service (outside the sans-IO core: it may read the clock)."""

from __future__ import annotations

import argparse
import time

from sockkit.catalog import ServiceSpec
from sockkit.services.echo import DEFAULT_PORT, MAX_LINE, EchoService


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", action="store_true", help="echo bytes unchanged (RFC 862), no Echo=> prefix")
    parser.add_argument("--stamp", action="store_true", help="append ' at <server time>' to each reply")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                        help="simulate a slow request: wait this long before each reply")
    parser.add_argument("--max-line", type=int, default=MAX_LINE, metavar="BYTES",
                        help=f"longest line accepted in line mode (default {MAX_LINE})")


def build(args: argparse.Namespace) -> EchoService:
    if args.delay < 0:
        raise ValueError("--delay must be zero or more")
    return EchoService(raw=args.raw, delay=args.delay, stamp=time.ctime if args.stamp else None,
                       max_line=args.max_line)


SPEC = ServiceSpec(name="echo", help="the chapter's echo service (Echo=> replies)", default_port=DEFAULT_PORT,
                   add_arguments=add_arguments, build=build)
