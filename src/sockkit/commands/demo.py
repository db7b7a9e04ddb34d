"""``sockkit demo``: the chapter's sessions, end to end on localhost, under every model.

The chapter's echo session with sockkit's client, then with the chapter's own client (Example
10-2 ported to Python 3, from a source checkout: it dials the fixed port 50007, so it runs in a
private network namespace of its own). For each model: eight slow clients at once (``--delay``)
to show which models serve clients in parallel. Then getfile: a verified download, a refused
escape, and an interrupted download resumed.
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

from sockkit import netlab
from sockkit.catalog import MODELS
from sockkit.clients.echo import exchange
from sockkit.services.echo import DEFAULT_PORT

DELAY = 0.5
CLIENTS = 8
#: The chapter's echo client, ported to Python 3, where a source checkout keeps it.
CHAPTER_CLIENT = Path(__file__).resolve().parents[3] / "tests" / "chapter" / "programs" / "echo-client.py"


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the chapter's sessions under every model and show them")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models (default: all)")
    parser.add_argument("--chapter-client", type=Path, default=CHAPTER_CLIENT, metavar="PATH",
                        help="the chapter's echo-client.py to run against sockkit (default: the source checkout's)")
    parser.set_defaults(handler=run)


def start(model: str, *extra: str, service: str = "echo", port: int = 0) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "sockkit", "serve", service, "--model", model, "--port", str(port),
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
    failures = chapter_client_session(models[0], args.chapter_client)
    print(f"\n== {CLIENTS} clients at once, each request taking {DELAY} s (serve echo --delay {DELAY})")
    print(f"{'model':<14}{'elapsed':>9}   verdict")
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


def chapter_client_session(model: str, client: Path) -> int:
    """The chapter's own client (Example 10-2) against ``sockkit serve echo``, in a namespace of its own."""
    print("\n== the same session with the chapter's own client: python echo-client.py localhost spam Spam SPAM")
    if not client.is_file():
        print(f"(skipped: {client} not found; it is in a source checkout of sockkit)")
        return 0
    if why := netlab.unavailable():
        print(f"(skipped: it dials the fixed port {DEFAULT_PORT}, so it runs in a private network namespace; {why})")
        return 0
    with netlab.Lab() as lab, lab.inside(lab.front):  # the server and the client are started in there
        proc, _ = start(model, port=DEFAULT_PORT)
        try:
            done = subprocess.run([sys.executable, str(client), "localhost", "spam", "Spam", "SPAM"],
                                  capture_output=True, text=True, timeout=60)
        finally:
            code = stop(proc)
    print(done.stdout + done.stderr, end="")
    return int(done.returncode != 0 or code != 0)


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
