"""``sockkit demo``: the chapter's sessions, end to end on localhost, under every model.

For each model: start ``sockkit serve echo``, run the chapter's client session, then eight
slow clients at once (``--delay``) to show which models serve clients in parallel.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

from sockkit.catalog import MODELS
from sockkit.clients.echo import exchange

DELAY = 0.5
CLIENTS = 8


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the chapter's sessions under every model and show them")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models (default: all)")
    parser.set_defaults(handler=run)


def start(model: str, *extra: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "sockkit", "serve", "echo", "--model", model, "--port", "0",
                             "--quiet", *extra], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r":(\d+)\s*$", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"{model} server did not start: {line!r}")
    return proc, int(match.group(1))


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def slow_clients(port: int) -> float:
    began = time.monotonic()
    threads = [threading.Thread(target=lambda i=i: list(exchange("localhost", port, [f"client {i}"])))
               for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return time.monotonic() - began


def run(args) -> int:
    models = [m for m in args.models.split(",") if m]
    print("== the chapter's echo session (10.3.1.3): sockkit echo localhost spam Spam SPAM")
    proc, port = start(models[0])
    for reply in exchange("localhost", port, ["spam", "Spam", "SPAM"]):
        print("Client received:", repr(reply))
    stop(proc)
    print(f"\n== {CLIENTS} clients at once, each request taking {DELAY} s (serve echo --delay {DELAY})")
    print(f"{'model':<14}{'elapsed':>9}   verdict")
    failures = 0
    for model in models:
        proc, port = start(model, "--delay", str(DELAY), "--workers", str(CLIENTS))
        try:
            elapsed = slow_clients(port)
        finally:
            code = stop(proc)
        parallel = elapsed < DELAY * CLIENTS / 2
        verdict = "in parallel" if parallel else "one after another"
        if code != 0:
            verdict += f" (exit {code}!)"
            failures += 1
        print(f"{model:<14}{elapsed:>8.2f}s   {verdict}")
    print("\nEvery model exited 0 on SIGTERM." if not failures else f"\n{failures} model(s) failed to stop cleanly.")
    return 1 if failures else 0
