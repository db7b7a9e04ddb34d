"""``sockkit get --retry``: which failures are tried again, the bounded back-off, and real resumes
through connections the fault proxy resets, a server that is not up yet, and a server restarted
with another version of the file."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sockkit import netlab
from sockkit.clients.retry import FIRST_DELAY, MAX_DELAY, delay, retryable, with_retries
from sockkit.errors import (
    Cancelled,
    ConnectError,
    DestinationExists,
    IntegrityError,
    NoAnswer,
    ProtocolViolation,
    RemoteError,
    TransferInterrupted,
    Unreachable,
)
from sockkit.testing import running, sockkit_command

SIZE = 6 << 20


def test_what_is_worth_another_attempt():
    assert retryable(TransferInterrupted("cut")) and retryable(NoAnswer("closed")) and retryable(Unreachable("refused"))
    assert retryable(RemoteError("busy", "too many"))
    for final in (RemoteError("not-found", ""), IntegrityError("digest"), DestinationExists("x"),
                  ProtocolViolation("garbage"), ConnectError("TLS certificate not accepted"), Cancelled("c"),
                  KeyboardInterrupt()):
        assert not retryable(final), final


def test_backoff_doubles_within_bounds():
    rng = random.Random(1)
    waits = [delay(retry, rng) for retry in range(1, 40)]
    assert FIRST_DELAY * 0.75 <= waits[0] <= FIRST_DELAY * 1.25
    assert all(wait <= MAX_DELAY * 1.25 for wait in waits)
    assert waits[4] >= MAX_DELAY * 0.75  # the fifth wait has reached the ceiling


def test_with_retries_stops_at_the_bound_and_at_a_final_error():
    calls, told = [], []

    def flaky():
        calls.append(1)
        raise TransferInterrupted(f"cut {len(calls)}")

    with pytest.raises(TransferInterrupted, match="cut 4"):
        with_retries(flaky, 3, on_retry=lambda exc, n, wait: told.append(n), wait_for=lambda n: 0.0)
    assert len(calls) == 4 and told == [1, 2, 3]

    def missing():
        calls.append(1)
        raise RemoteError("not-found", "")

    calls.clear()
    with pytest.raises(RemoteError):
        with_retries(missing, 5, wait_for=lambda n: 0.0)
    assert len(calls) == 1


def test_a_cancel_during_the_wait_ends_it():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        with_retries(lambda: (_ for _ in ()).throw(TransferInterrupted("cut")), 3, cancel=cancel)


# --- the command against real servers ------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(SIZE))
    return root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def get(port: int, dest: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(sockkit_command("get", "big.bin", "--port", str(port), "-o", str(dest), "--timeout", "5",
                                          "--no-fsync", *extra), capture_output=True, text=True, timeout=timeout)


class Proxy:
    """``sockkit proxy`` in front of a server, with faults."""

    def __init__(self, target: int, *faults: str) -> None:
        self.process = subprocess.Popen(sockkit_command("proxy", "127.0.0.1:0", f"127.0.0.1:{target}", *faults),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        self.port = int(line.split()[3].rsplit(":", 1)[1])

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.process.terminate()
        self.process.communicate(timeout=20)


def test_retry_resumes_through_resets_to_an_identical_file(tmp_path, served):
    """Every connection is reset after 1.5 MiB down: without --retry the get fails and keeps its
    part; with --retry 10 each attempt resumes from the verified part and the file ends identical."""
    dest = tmp_path / "dest"
    dest.mkdir()
    with running("getfile", "--port", "0", "--root", str(served), "--quiet") as server, \
            Proxy(server.port, "--down-reset-after", "1536k", "--quiet") as proxy:
        once = get(proxy.port, dest)
        assert once.returncode == 1 and not (dest / "big.bin").exists()
        assert any(name.endswith(".part") for name in os.listdir(dest))
        done = get(proxy.port, dest, "--retry", "10")
    assert done.returncode == 0, done.stderr
    assert sha(dest / "big.bin") == sha(served / "big.bin")
    retries = re.findall(r"retry (\d+) of 10 in", done.stderr)
    assert len(retries) >= 2, done.stderr  # 6 MiB at 1.5 MiB a connection, one of which was the first run
    assert "resumed at" in done.stdout
    assert not any(name.endswith(".part") for name in os.listdir(dest))


def test_a_retry_that_finds_another_version_starts_over(tmp_path, served):
    """A part of version 1 is left; the server now holds version 2 (as another server behind a
    balancer might): the retried get starts over and ends with version 2, never a splice."""
    dest = tmp_path / "dest"
    dest.mkdir()
    with running("getfile", "--port", "0", "--root", str(served), "--quiet") as server, \
            Proxy(server.port, "--down-reset-after", "1536k", "--quiet") as proxy:
        assert get(proxy.port, dest).returncode == 1
        (served / "big.bin").write_bytes(os.urandom(SIZE))
        done = get(proxy.port, dest, "--retry", "10")
    assert done.returncode == 0, done.stderr
    assert sha(dest / "big.bin") == sha(served / "big.bin")


def test_retry_gives_up_after_n(tmp_path):
    """Nothing listening: --retry 2 makes three attempts, waits about 0.5 + 1 s, exits 1."""
    import socket

    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    began = time.monotonic()
    done = get(port, tmp_path, "--retry", "2")
    assert done.returncode == 1
    assert len(re.findall(r"connection refused.*; retry \d of 2", done.stderr)) == 2, done.stderr
    assert time.monotonic() - began >= (0.5 + 1.0) * 0.75


def test_retry_waits_for_a_server_that_comes_up(tmp_path, served):
    """The server is not up when get starts (refused), and comes up on the same fixed port while
    get waits: the download completes. Fixed port, so inside a private network namespace."""
    reason = netlab.unavailable()
    if reason:
        pytest.skip(reason)
    with netlab.Lab() as lab, lab.inside(lab.front):
        client = subprocess.Popen(sockkit_command("get", "big.bin", "--port", "50001", "-o", str(tmp_path),
                                                  "--retry", "6", "--no-fsync"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = client.stderr.readline()
        assert "connection refused" in first and "retry 1 of 6" in first, first
        with running("getfile", "--port", "50001", "--root", str(served), "--quiet"):
            _, err = client.communicate(timeout=120)
    assert client.returncode == 0, err
    assert sha(tmp_path / "big.bin") == sha(served / "big.bin")
