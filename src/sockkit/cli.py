"""The ``sockkit`` command line: argparse only.

Each subcommand lives in a module exposing ``register(subparsers)``, which adds a parser whose
``handler`` default is ``run(args) -> int``. Adding a command is one line in ``COMMANDS``.

Only the module of the command being run is imported: importing every one (asyncio, uvloop, the
proxy, the GUI, the load tester, the benchmarks) to build one big parser cost every invocation
~0.15 s, ``sockkit --help`` included. ``sockkit --help`` and ``--version`` import none of them:
the overview is built from the summaries below (a test checks they match each module's own help).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from sockkit import __version__

#: Every subcommand: the module that registers it, and the one line ``sockkit --help`` shows.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("sockkit.commands.serve", "run a service under a server model"),
    "echo": ("sockkit.commands.echo", "send messages to an echo server, print each reply"),
    "probe": ("sockkit.commands.probe", "talk to any port: show its banner, send a line, show the reply"),
    "spawn": ("sockkit.commands.spawn", "run N copies of a client command in parallel"),
    "signals": ("sockkit.commands.signals", "print each signal received (the chapter's signal demo)"),
    "proxy": ("sockkit.commands.proxy", "TCP proxy that injects latency, rate limits, slicing, stalls, closes, resets"),
    "demo": ("sockkit.commands.demo", "run the chapter's sessions under every model and show them"),
    "get": ("sockkit.commands.get", "download a file (or -r a directory) from a getfile server"),
    "ls": ("sockkit.commands.get", "list a directory on a getfile server"),
    "put": ("sockkit.commands.get", "upload a file to a getfile server started with --allow-upload"),
    "form": ("sockkit.commands.gui", "the reusable Tkinter form's self-test (Name, Age, Job)"),
    "gui": ("sockkit.commands.gui", "the getfile download window (Tkinter)"),
    "load": ("sockkit.commands.load", "load-test an echo server: req/s, latency percentiles, errors"),
    "bench": ("sockkit.commands.bench", "benchmarks: `sockkit bench models` compares every server model"),
}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, minus its import of shutil (with zlib, bz2 and lzma: ~3 ms of every
    `sockkit get`), which it makes only to learn the terminal width; found here the same way."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="sockkit", description="Socket servers and clients.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"sockkit {__version__}")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND", required=True)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser holding ``command`` (and the others its module registers); with no command, the
    overview: every command listed by its summary, none of their modules imported."""
    parser, subparsers = _top_parser()
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0]).register(subparsers)
    else:
        for name, (_, summary) in COMMANDS.items():
            subparsers.add_parser(name, help=summary, formatter_class=HelpFormatter)
    return parser


def build_full_parser() -> argparse.ArgumentParser:
    """Every command's real parser (for tests and documentation tools; slow to build)."""
    parser, subparsers = _top_parser()
    for module in dict.fromkeys(module for module, _ in COMMANDS.values()):
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The command's modules load with the cyclic GC off, and what they made is then frozen out of
    # later collections: modules, classes and functions live as long as the process, and scanning
    # them again each time the allocation count crosses a threshold while imports pile up cost
    # ~4 ms of a ~50 ms `sockkit get`.
    collecting = gc.isenabled()
    gc.disable()
    try:
        args = build_parser(argv[0] if argv else None).parse_args(argv)
    finally:
        if collecting:
            gc.freeze()
            gc.enable()
    args.argv = argv  # what the command was given, for one that re-executes itself (serve's reload)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("sockkit: interrupted", file=sys.stderr)
        return 130
