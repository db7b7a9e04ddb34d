"""``sockkit spawn N -- COMMAND ...``: the chapter's testecho, run N clients in parallel."""

from __future__ import annotations

import subprocess
import sys
import time


def register(subparsers) -> None:
    parser = subparsers.add_parser("spawn", help="run N copies of a client command in parallel",
                                   description="Start N copies of COMMAND at once (the chapter's testecho) "
                                               "and report how many succeeded.")
    parser.add_argument("count", type=int, metavar="N")
    parser.add_argument("command", nargs="+", metavar="COMMAND", help="the client command, after --")
    parser.add_argument("--show-output", action="store_true", help="let the clients print (default: quiet)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="kill clients still running after this long (default %(default)s)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    if args.count < 1:
        print("sockkit spawn: N must be at least 1", file=sys.stderr)
        return 2
    output = None if args.show_output else subprocess.DEVNULL
    started = time.monotonic()
    try:
        procs = [subprocess.Popen(args.command, stdout=output, stderr=output) for _ in range(args.count)]
    except OSError as exc:
        print(f"sockkit spawn: cannot run {args.command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 2
    deadline = started + args.timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(None)
    elapsed = time.monotonic() - started
    ok = sum(code == 0 for code in codes)
    timed_out = sum(code is None for code in codes)
    note = f", {timed_out} timed out" if timed_out else ""
    print(f"{ok} of {args.count} clients succeeded in {elapsed:.2f} s{note}")
    return 0 if ok == args.count else 1
