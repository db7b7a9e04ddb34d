"""``sockkit demo``: the chapter's sessions, end to end on localhost, under every model.

For each model: start ``sockkit serve echo``, run the chapter's client session, then eight
slow clients at once (``--delay``) to show which models serve clients in parallel. Then getfile:
a verified download, a refused escape, and an interrupted download resumed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sockkit.catalog import MODELS
from sockkit.clients.echo import exchange

DELAY = 0.5
CLIENTS = 8


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the chapter's sessions under every model and show them")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models (default: all)")
    parser.set_defaults(handler=run)


def start(model: str, *extra: str, service: str = "echo") -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "sockkit", "serve", service, "--model", model, "--port", "0",
                             "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = ""
    while "listening on" not in line:
        line = proc.stdout.readline()
        if not line:
            break
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
    failures += getfile_session()
    return 1 if failures else 0


def getfile_session() -> int:
    """getfile end to end: a verified download, a refused escape, an interrupted download resumed."""
    from sockkit.clients.getfile import download
    from sockkit.errors import SockkitError, describe

    print("\n== getfile: sockkit serve getfile --root ROOT; sockkit get ...")
    with tempfile.TemporaryDirectory(prefix="sockkit-demo-") as tmp:
        root, dest = Path(tmp, "root"), Path(tmp, "dest")
        root.mkdir()
        dest.mkdir()
        payload = os.urandom(1 << 20) * 64
        (root / "big.bin").write_bytes(payload)
        proc, port = start("thread", "--root", str(root), service="getfile")
        failures = 0
        try:
            result = download("big.bin", port=port, dest=dest)
            rate = result.size / max(result.seconds, 1e-9) / 1e6
            print(f"got big.bin: {result.size >> 20} MiB, verified {result.digest[:18]}..., {rate:,.0f} MB/s")
            for attempt in ("../../etc/passwd", "missing.txt"):
                try:
                    download(attempt, port=port, dest=dest)
                    print(f"get {attempt}: served?! that is a bug")
                    failures += 1
                except SockkitError as exc:
                    print(f"get {attempt}: {describe(exc)}")
            cancel = threading.Event()

            def stop_half_way(progress) -> None:
                if progress.done >= progress.total // 2:
                    cancel.set()

            (dest / "big.bin").unlink()
            try:
                download("big.bin", port=port, dest=dest, cancel=cancel, progress=stop_half_way, limit_rate=64e6)
            except SockkitError as exc:
                parts = [p.name[:24] + "...part" for p in dest.iterdir() if p.name.endswith(".part")]
                print(f"interrupted: {describe(exc)}; left {', '.join(parts) or 'no part file'}")
            result = download("big.bin", port=port, dest=dest)
            same = (dest / "big.bin").read_bytes() == payload
            print(f"resumed at {result.resumed_from >> 20} MiB: file identical to the original: {same}")
            failures += not same
        finally:
            failures += stop(proc) != 0
    return failures
