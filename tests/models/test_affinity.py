"""``serve --cpus``: thread-per-client models are kept on one CPU by default, other models are not.

Checked on real servers through /proc/PID/task/*/status, including the thread started for a client.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from sockkit.affinity import parse_cpus
from sockkit.bench.targets import peer_targets
from sockkit.catalog import models_where
from sockkit.testing import read_line, running, sockkit_command

ALLOWED = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
needs_two_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs at least two CPUs to tell pinned from not")


def cpus_of(pid: int) -> list[set[int]]:
    """The CPUs each thread of ``pid`` may run on."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found.append(set(parse_cpus(line.split(":", 1)[1])))
    return found


def with_a_client(server, check) -> None:
    """Run ``check`` while one client is connected (so its thread exists) and answered."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"spam\n")
        assert read_line(sock) == b"Echo=>spam\n"
        check()


def test_parse_cpus() -> None:
    assert parse_cpus("auto") == "auto"
    assert parse_cpus(" ALL ") == "all"
    assert parse_cpus("1") == {1}
    assert parse_cpus("0,2-3") == {0, 2, 3}
    for bad in ("", "x", "3-1", "-1", "1-", "0,,1"):
        with pytest.raises(ValueError):
            parse_cpus(bad)


@needs_two_cpus
@pytest.mark.parametrize("model", models_where(pin_cpu=True))
def test_threaded_models_run_on_one_cpu_by_default(model: str) -> None:
    with running("echo", "--model", model, "--port", "0", "--quiet") as server:
        def check() -> None:
            per_thread = cpus_of(server.pid)
            assert len(per_thread) >= 2, "the client's thread should exist by now"
            assert all(len(cpus) == 1 for cpus in per_thread), per_thread
            assert len({frozenset(cpus) for cpus in per_thread}) == 1, "every thread on the same CPU"
            assert per_thread[0] <= ALLOWED
        with_a_client(server, check)


@needs_two_cpus
@pytest.mark.parametrize("args", [("--model", "select"), ("--model", "thread", "--cpus", "all"),
                                  ("--model", "socketserver", "--fork")],
                         ids=["select", "thread-cpus-all", "socketserver-fork"])
def test_others_stay_where_the_system_puts_them(args: tuple[str, ...]) -> None:
    with running("echo", *args, "--port", "0", "--quiet") as server:
        def check() -> None:
            assert all(cpus == ALLOWED for cpus in cpus_of(server.pid)), cpus_of(server.pid)
        with_a_client(server, check)


@needs_two_cpus
def test_tls_is_not_pinned(certificate) -> None:
    cert, key = certificate
    with running("echo", "--model", "thread", "--port", "0", "--quiet", "--tls-cert", str(cert),
                 "--tls-key", str(key)) as server:
        assert all(cpus == ALLOWED for cpus in cpus_of(server.pid))


@needs_two_cpus
def test_an_explicit_list_pins_any_model() -> None:
    cpu = max(ALLOWED)
    with running("echo", "--model", "select", "--port", "0", "--quiet", "--cpus", str(cpu)) as server:
        def check() -> None:
            assert all(cpus == {cpu} for cpus in cpus_of(server.pid)), cpus_of(server.pid)
        with_a_client(server, check)


@pytest.mark.parametrize("value, message", [("lots", "not auto, all or a CPU list"),
                                            ("4095", "not available to this process")])
def test_bad_cpus_are_refused_before_listening(value: str, message: str) -> None:
    if value == "4095" and 4095 in ALLOWED:
        pytest.skip("this machine has a CPU 4095")
    done = subprocess.run(sockkit_command("serve", "echo", "--port", "0", "--cpus", value), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
    assert "listening" not in done.stdout


@needs_two_cpus
def test_the_benchmarks_one_cpu_peer_is_pinned_and_echoes() -> None:
    """``threading-tcpserver-1cpu`` in ``sockkit bench models``: the bare peer on one CPU, still a bare echo."""
    peer = next(t for t in peer_targets() if t.name == "threading-tcpserver-1cpu")
    proc = subprocess.Popen(peer.command(), stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"raw bytes")
            assert sock.recv(100) == b"raw bytes"
            assert all(len(cpus) == 1 for cpus in cpus_of(proc.pid)), cpus_of(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
