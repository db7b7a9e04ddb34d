"""``sockkit form [--dynamic]`` (the chapter's form self-test) and ``sockkit gui`` (the getfile window).

Tk is imported only when one of these runs, so the other commands start as fast without it.
"""

from __future__ import annotations

import argparse
import sys

from sockkit.commands.get import add_session_arguments, parse_rate
from sockkit.ports import connect_port


def register(subparsers) -> None:
    form = subparsers.add_parser("form", help="the reusable Tkinter form's self-test (Name, Age, Job)",
                                 description="The chapter's form self-test: values are printed on Submit/Return.")
    form.add_argument("--dynamic", action="store_true",
                      help="ask for the field names on the console first; the form goes away after one submit")
    form.set_defaults(handler=run_form)

    gui = subparsers.add_parser("gui", help="the getfile download window (Tkinter)",
                                description="Download from a getfile server with a window that never freezes.")
    gui.add_argument("--host", help="prefill Server (default: the last one used, else 127.0.0.1)")
    gui.add_argument("--port", type=connect_port, help="prefill Port (default: the last one used, else 50001)")
    gui.add_argument("--dir", dest="folder", metavar="DIR",
                     help="prefill Local Dir (default: the last one used, else the current directory)")
    gui.add_argument("--file", default="", metavar="REMOTE_PATH", help="prefill File")
    gui.add_argument("--subprocess", action="store_true",
                     help="run each download as a `sockkit get` command line instead of a function call")
    gui.add_argument("--limit-rate", type=parse_rate, metavar="RATE", help="at most RATE bytes/s (500K, 10M)")
    add_session_arguments(gui)
    gui.add_argument("--status-file", metavar="PATH",
                     help="append the window's events to PATH, one JSON object per line (for tests and scripts)")
    gui.set_defaults(handler=run_gui)


def tk_missing() -> str | None:
    try:
        import tkinter

        tkinter.Tcl()  # fails when Tcl/Tk itself is missing, not just the module
    except Exception as exc:  # ImportError, TclError: either way there is no GUI to show
        return f"Tkinter is not available ({exc})"
    return None


def run_form(args: argparse.Namespace) -> int:
    if reason := tk_missing():
        print(f"sockkit form: {reason}", file=sys.stderr)
        return 1
    from sockkit.gui.form import run_self_test

    return guard("form", lambda: run_self_test(dynamic=args.dynamic))


def run_gui(args: argparse.Namespace) -> int:
    if reason := tk_missing():
        print(f"sockkit gui: {reason}", file=sys.stderr)
        return 1
    from sockkit.gui.getfile_window import WindowOptions, run

    options = WindowOptions(host=args.host, port=args.port, folder=args.folder, file=args.file,
                            subprocess=args.subprocess, limit_rate=args.limit_rate, timeout=args.timeout,
                            status_file=args.status_file, token=args.token, tls=args.tls or bool(args.cafile),
                            cafile=args.cafile)
    return guard("gui", lambda: run(options))


def guard(command: str, body) -> int:
    import tkinter

    try:
        return body()
    except tkinter.TclError as exc:  # typically: no display ($DISPLAY unset or unreachable)
        print(f"sockkit {command}: cannot open a window: {exc}", file=sys.stderr)
        return 1
