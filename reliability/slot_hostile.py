"""Slot-holding scenarios from issue 16 (items 6, 7, 9): clients that keep a transfer slot or a
connection without doing the work it is for -- a download never read, a download sipped, a
connection that never speaks. Each runs a real ``sockkit serve getfile`` under one model; the
figure is how long the slot stayed taken, measured by an honest client asking for it meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from reliability.getfile_scenarios import getfile_server
from reliability.model_scenarios import MODELS, ONE_AT_A_TIME
from reliability.suite import Row, Scale, scenario
from sockkit.testing import read_line

#: The file the hostile clients ask for (sparse: costs no disk) and the honest one (> 64 KiB).
BIG = 256 << 20
HONEST = 256 << 10


def _tree() -> Path:
    base = Path(tempfile.mkdtemp(prefix="sockkit-rel-slot-"))
    with open(base / "big.bin", "wb") as big:
        big.truncate(BIG)
    (base / "honest.bin").write_bytes(os.urandom(HONEST))
    return base


def _hostile_get(port: int) -> socket.socket:
    """A client that asks for big.bin with a 4 KiB receive buffer (set before connecting)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET1 0 - big.bin\n")
    read_line(sock)  # its answer line: the transfer (and its slot) has begun
    return sock


def _honest_until(port: int, began: float, budget: float) -> tuple[float | None, str]:
    """Ask for honest.bin until it comes whole (seconds after ``began``) or ``budget`` runs out;
    and the last refusal seen."""
    last = ""
    while time.monotonic() - began < budget:
        left = max(0.5, budget - (time.monotonic() - began))
        with contextlib.suppress(OSError), \
                socket.create_connection(("127.0.0.1", port), timeout=left) as sock:
            sock.sendall(b"GET1 0 - honest.bin\n")
            head = read_line(sock)
            if head.startswith(b"OK1"):
                got = 0
                while got < HONEST:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
                if got >= HONEST:
                    return time.monotonic() - began, last
            last = head.decode(errors="replace").strip()[:40]
        time.sleep(0.2)
    return None, last


def _closed_short(sock: socket.socket, seconds: float = 3.0) -> bool:
    """Read what the server sent; True if it closed (FIN or reset) before the whole file."""
    got = 0
    end = time.monotonic() + seconds
    sock.settimeout(0.5)
    while time.monotonic() < end and got < BIG:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except OSError:
            return True
        if not chunk:
            return True
        got += len(chunk)
    return False


IDLE = 2.0


@scenario("unread-download", f"a getfile client asks for a 256 MiB file and reads nothing (--idle-timeout {IDLE:g}, "
          "--max-transfers 1): the server closes it and frees its transfer slot within the idle timeout + 3 s; an "
          "honest get (256 KiB) asked meanwhile then succeeds", MODELS)
def unread_download(model: str, scale: Scale) -> Row:
    base = _tree()
    try:
        with getfile_server(model, base, "--idle-timeout", str(IDLE), "--max-transfers", "1") as server:
            hostile = _hostile_get(server.port)
            began = time.monotonic()
            with hostile:
                took, refusal = _honest_until(server.port, began, IDLE + 8)
                closed = _closed_short(hostile)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ok = took is not None and took <= IDLE + 3 and closed
    shown = f"{took:.1f} s" if took is not None else f"not within {IDLE + 8:g} s (last answer {refusal!r})"
    return Row("unread-download", model, f"honest get served after {shown}; unread client closed short {closed}", ok)


#: The server's stderr (where the cut is logged) into the lines the row reads.
STDERR_TOO = ("sh", "-c", 'exec "$@" 2>&1', "sh")
WINDOW = 2.0
RATE = "32k"
SIPPERS = 4


def _sip(sock: socket.socket, stop: threading.Event, taken: list[int]) -> None:
    """Take 4 KiB every 0.5 s (8 KiB/s: progress every time, never idle) until stopped or closed."""
    with contextlib.suppress(OSError):
        while not stop.wait(0.5):
            chunk = sock.recv(4096)
            if not chunk:
                return
            taken[0] += len(chunk)


@scenario("slow-readers", f"{SIPPERS} getfile clients each take 4 KiB of a 256 MiB file every 0.5 s (8 KiB/s, never "
          f"idle) holding every transfer slot (--max-transfers {SIPPERS}, --idle-timeout 5); with --min-rate {RATE} "
          f"--min-rate-window {WINDOW:g} they are cut (logged by name) and an honest get of 256 KiB succeeds within "
          f"two windows + 4 s", MODELS)
def slow_readers(model: str, scale: Scale) -> Row:
    base = _tree()
    stop = threading.Event()
    budget = 2 * WINDOW + 4
    try:
        with getfile_server(model, base, "--idle-timeout", "5", "--max-transfers", str(SIPPERS),
                            "--min-rate", RATE, "--min-rate-window", str(WINDOW), wrap=STDERR_TOO) as server:
            count = 1 if model in ONE_AT_A_TIME else SIPPERS
            sippers = [_hostile_get(server.port) for _ in range(count)]
            taken = [[0] for _ in sippers]
            threads = [threading.Thread(target=_sip, args=(sock, stop, box), daemon=True)
                       for sock, box in zip(sippers, taken, strict=True)]
            for thread in threads:
                thread.start()
            began = time.monotonic()
            took, refusal = _honest_until(server.port, began, budget + 6)
            stop.set()
            for thread in threads:
                thread.join(5)
            for sock in sippers:
                sock.close()
            time.sleep(0.2)
            logged = [line for line in list(server.lines) if "minimum rate" in line and "127.0.0.1" in line]
    finally:
        stop.set()
        shutil.rmtree(base, ignore_errors=True)
    ok = took is not None and took <= budget and bool(logged)
    shown = f"{took:.1f} s" if took is not None else f"not within {budget + 6:g} s (last answer {refusal!r})"
    return Row("slow-readers", model, f"{count} sippers took {sum(b[0] for b in taken) // 1024:,} KiB; honest get "
                                      f"served after {shown}; cut logged {len(logged)} line(s)", ok)


REQUEST = 2.0  # getfile_server's --request-timeout


@scenario("silent-connection", f"connections that send nothing (--request-timeout {REQUEST:g}, idle timeout 300 s) "
          "are closed within the request deadline of their accept + 3 s; an honest get then succeeds", MODELS)
def silent_connection(model: str, scale: Scale) -> Row:
    base = _tree()
    count = 1 if model in ONE_AT_A_TIME else 4
    budget = REQUEST + 3
    closed_after: list[float] = []
    try:
        with getfile_server(model, base, "--idle-timeout", "300") as server:
            socks = [socket.create_connection(("127.0.0.1", server.port), timeout=budget + 3) for _ in range(count)]
            began = time.monotonic()
            for sock in socks:
                with sock:
                    try:
                        sock.recv(1)  # b"" at the close
                    except TimeoutError:
                        continue  # still open: uncounted
                    except OSError:
                        pass  # a reset is a close too
                    closed_after.append(time.monotonic() - began)
            took, _ = _honest_until(server.port, time.monotonic(), 5)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    slowest = max(closed_after, default=0.0)
    ok = len(closed_after) == count and slowest <= budget and took is not None
    return Row("silent-connection", model, f"{len(closed_after)} of {count} silent connections closed, the last after "
                                           f"{slowest:.1f} s (at most {budget:g}); honest get ok {took is not None}",
               ok)
