"""``sockkit signals SIGNAL``: the chapter's signal demo -- print each signal as it arrives."""

from __future__ import annotations

import os
import signal
import sys
import time


def parse_signal(text: str) -> signal.Signals:
    """``10``, ``USR1`` or ``SIGUSR1`` -> the signal."""
    if text.isdigit():
        return signal.Signals(int(text))
    name = text.upper()
    return signal.Signals[name if name.startswith("SIG") else "SIG" + name]


def register(subparsers) -> None:
    parser = subparsers.add_parser("signals", help="print each signal received (the chapter's signal demo)",
                                   description="Install a handler for SIGNAL and print each one received.")
    parser.add_argument("signal", metavar="SIGNAL", help="name (USR1, SIGCHLD) or number (10)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    try:
        signum = parse_signal(args.signal)
    except (KeyError, ValueError):
        print(f"sockkit signals: unknown signal {args.signal!r}", file=sys.stderr)
        return 2
    if signum in (signal.SIGKILL, signal.SIGSTOP):
        print(f"sockkit signals: {signum.name} cannot be caught or handled by any process", file=sys.stderr)
        return 2

    def on_signal(number, frame):
        print("Got signal", number, "at", time.ctime(), flush=True)
        if number == signal.SIGCHLD:
            print("sigchld caught", flush=True)

    signal.signal(signum, on_signal)
    print(f"pid {os.getpid()} waiting for signal {int(signum)} ({signum.name}); Ctrl-C to stop",
          file=sys.stderr, flush=True)
    while True:
        signal.pause()
