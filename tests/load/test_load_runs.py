"""``sockkit load`` against real servers on loopback: bounded runs stop by themselves, failures are counted.

No timing assertions: only counts (requests done, refusals, wrong replies) and shapes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sockkit.load.plan import LoadPlan, parse_sizes
from sockkit.load.report import table, to_json
from sockkit.load.runner import run_load
from sockkit.testing import running, sockkit_command


@pytest.fixture(scope="module")
def raw_port() -> Iterator[int]:
    with running("echo", "--raw", "--model", "uvloop", "--port", "0", "--quiet") as server:
        yield server.port


def plan(port: int, **kwargs) -> LoadPlan:
    kwargs.setdefault("raw", True)
    kwargs.setdefault("connections", 4)
    kwargs.setdefault("time_limit", 60)
    return LoadPlan(host="127.0.0.1", port=port, **kwargs)


@contextmanager
def fake_server(reply) -> Iterator[int]:
    """A one-thread server answering every read with ``reply(data)``; for replies an echo would never send."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                conn.sendall(reply(data))
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in conns:
            conn.close()
        listener.close()


def test_requests_bound_stops_at_exactly_that_many(raw_port: int) -> None:
    """--requests N completes exactly N requests and stops without a duration."""
    result = run_load(plan(raw_port, requests=500))
    assert result.stats.requests == 500
    assert result.stats.failures == 0
    assert not result.cut
    assert result.stats.latency.total == 500
    assert result.stats.bytes == 500 * 1024


def test_duration_bound_stops_by_itself(raw_port: int) -> None:
    result = run_load(plan(raw_port, duration=0.3, warmup=0.1))
    assert result.stats.requests > 0
    assert result.stats.failures == 0
    assert not result.cut


def test_size_mix_and_verify(raw_port: int) -> None:
    """A mix of sizes, every reply byte compared. One connection: the sizes are then taken strictly
    in turn (with several, how many requests each connection completes depends on scheduling)."""
    result = run_load(plan(raw_port, requests=90, sizes=(1, 1000, 70_000), verify=True, connections=1))
    assert result.stats.requests == 90
    assert result.stats.wrong_replies == 0
    assert result.stats.bytes == 30 * (1 + 1000 + 70_000)


def test_processes_merge(raw_port: int) -> None:
    """Two forked workers split the requests; the parent merges their counts and histograms."""
    result = run_load(plan(raw_port, requests=401), processes=2)
    assert result.stats.requests == 401
    assert result.stats.latency.total == 401
    assert result.stats.connects == 4


def test_open_loop_with_request_bound(raw_port: int) -> None:
    result = run_load(plan(raw_port, requests=200, rate=2000))
    assert result.stats.requests == 200
    assert result.stats.failures == 0


def test_churn_opens_a_connection_per_request(raw_port: int) -> None:
    result = run_load(plan(raw_port, requests=100, churn=True))
    assert result.stats.requests == 100
    assert result.stats.connects >= 100
    assert result.stats.connect.total == result.stats.connects


def test_refused_connections_are_counted() -> None:
    """A port where nothing listens: every connect is refused and counted; the run still ends on time."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connects are refused
        result = run_load(plan(port, duration=0.3))
    assert result.stats.requests == 0
    assert result.stats.refused >= 4
    assert not result.cut


def test_wrong_content_is_counted_in_line_mode() -> None:
    with fake_server(lambda data: b"Echo=>" + data.upper()) as port:
        result = run_load(plan(port, raw=False, duration=0.3, connections=2))
    assert result.stats.wrong_replies >= 2
    assert result.stats.requests == 0


def test_extra_bytes_are_counted_in_raw_mode() -> None:
    """A raw echo that answers more bytes than it got is wrong, not faster."""
    with fake_server(lambda data: data + data) as port:
        result = run_load(plan(port, duration=0.3, connections=2))
    assert result.stats.wrong_replies >= 2


def test_silent_server_times_out() -> None:
    with fake_server(lambda data: b"") as port:
        result = run_load(plan(port, requests=10, connections=2, timeout=0.3, time_limit=5))
    assert result.stats.timeouts >= 2
    assert result.stats.requests == 0


@pytest.mark.parametrize("model", ["uvloop", "thread"])
def test_line_mode_against_the_chapter_echo(model: str) -> None:
    """The default mode checks every ``Echo=>`` reply of a real ``sockkit serve echo --lines``."""
    with running("echo", "--model", model, "--lines", "--port", "0", "--quiet") as server:
        result = run_load(plan(server.port, raw=False, requests=300, sizes=(20, 3000)))
    assert result.stats.requests == 300
    assert result.stats.failures == 0


def test_cli_json_shape(raw_port: int) -> None:
    out = subprocess.run(sockkit_command("load", f"127.0.0.1:{raw_port}", "--raw", "-n", "200", "-c", "2", "--json"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["requests"] == 200
    assert set(doc["latency_ms"]) == {"min", "p50", "p90", "p99", "p99.9", "max", "mean"}
    for key in ("rps", "mb_per_s", "connect_ms", "refused", "reset", "timeouts", "wrong_replies", "errors",
                "client_cpu_s", "connections", "sizes", "processes"):
        assert key in doc
    assert doc["latency_ms"]["min"] <= doc["latency_ms"]["p50"] <= doc["latency_ms"]["p99"] <= doc["latency_ms"]["max"]


def test_cli_table_and_refusal_exit_code() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        out = subprocess.run(sockkit_command("load", f"127.0.0.1:{port}", "-d", "0.2", "-c", "1"),
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "refused" in out.stdout


def test_cli_refuses_an_unbounded_run() -> None:
    out = subprocess.run(sockkit_command("load", "127.0.0.1:9"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--duration" in out.stderr


def test_plan_validation() -> None:
    assert parse_sizes("64,1024, 65536") == (64, 1024, 65536)
    with pytest.raises(ValueError):
        parse_sizes("0")
    with pytest.raises(ValueError):
        LoadPlan(host="127.0.0.1", port=1)
    shares = [plan(1, connections=5, requests=11, rate=100.0).share(i, 2) for i in range(2)]
    assert sum(s.connections for s in shares) == 5
    assert sum(s.requests for s in shares) == 11
    assert sum(s.rate for s in shares) == pytest.approx(100.0)


def test_report_renders_without_samples() -> None:
    from sockkit.load.runner import LoadResult
    from sockkit.load.stats import Stats

    result = LoadResult(plan(1, duration=1.0), 1, Stats())
    assert "0 req/s" in table(result).replace(",", "")
    assert to_json(result)["latency_ms"]["p99"] == 0


def test_ipv6_target() -> None:
    """``[::1]:PORT`` reaches a server listening on IPv6 loopback."""
    from sockkit.testing import ipv6_available

    if not ipv6_available():
        pytest.skip("no IPv6 loopback here")
    with running("echo", "--raw", "--model", "uvloop", "--host", "::1", "--port", "0", "--quiet") as server:
        out = subprocess.run(sockkit_command("load", f"[::1]:{server.port}", "--raw", "-n", "50", "-c", "2", "--json"),
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["requests"] == 50


def test_open_loop_churn_opens_a_connection_per_request(raw_port: int) -> None:
    """--rate with --churn: every request due gets its own connection (no keepers held open)."""
    result = run_load(plan(raw_port, rate=200, duration=1.0, churn=True, connections=8))
    stats = result.stats
    assert stats.failures == 0
    assert 150 <= stats.requests <= 210 and stats.connects == stats.requests


def test_wrong_replies_say_which_server_the_mode_expects() -> None:
    """README's ``sockkit load ... --raw`` against the default ``serve echo`` (the chapter's Echo=> replies):
    nothing but wrong replies, and the table says which server --raw expects."""
    with running("echo", "--port", "0", "--quiet") as server:
        out = subprocess.run(sockkit_command("load", f"127.0.0.1:{server.port}", "--raw", "-d", "0.3", "-c", "1"),
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "  note: --raw expects a byte-exact echo (sockkit serve echo --raw)" in out.stdout, out.stdout
