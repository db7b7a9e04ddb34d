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
    "sockkit.commands.gui",
    "sockkit.commands.load",
    "sockkit.commands.bench",
]


#: Commands whose start-up time is part of what they measure: ``sockkit get`` of a 1 GiB file
#: takes ~0.5 s, and importing every command module (asyncio, uvloop, the proxy, the GUI, ...)
#: to build the full parser cost 0.08 s of CPU more (0.21 vs 0.13 s, bytecode cached). For
#: these, only their own module is imported.
FAST_COMMANDS = {"get": "sockkit.commands.get", "ls": "sockkit.commands.get", "put": "sockkit.commands.get"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``: a module name) one holding just that module's commands."""
    parser = argparse.ArgumentParser(prog="sockkit", description="Socket servers and clients.")
    parser.add_argument("--version", action="version", version=f"sockkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [only] if only else COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(FAST_COMMANDS.get(argv[0]) if argv else None).parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("sockkit: interrupted", file=sys.stderr)
        return 130
