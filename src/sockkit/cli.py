"""The ``sockkit`` command line: argparse only.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser
whose ``handler`` default is ``run(args) -> int``. Adding a command is one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sockkit import __version__

#: Modules that each register one or more subcommands.
COMMANDS = [
    "sockkit.commands.serve",
    "sockkit.commands.echo",
    "sockkit.commands.probe",
    "sockkit.commands.spawn",
    "sockkit.commands.signals",
    "sockkit.commands.proxy",
    "sockkit.commands.demo",
    "sockkit.commands.get",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sockkit", description="Socket servers and clients.")
    parser.add_argument("--version", action="version", version=f"sockkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("sockkit: interrupted", file=sys.stderr)
        return 130
