"""The fault proxy: its sans-IO plan, its relay over real loopback sockets, and its command.

Timing assertions are one-sided ("took at least the latency"): a busy machine only makes things
slower, so they cannot flake. Nothing waits with sleep; blocking calls carry generous timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockkit import netlab
from sockkit.commands.proxy import faults_from, parse_duration, parse_listen, parse_size, register
from sockkit.protocols.proxy_header import Endpoint, HeaderReader
from sockkit.proxy import FaultProxy, FaultProxyThread, Faults, ProxyFaults
from sockkit.proxy.faults import Cut, CutKind, DirectionPlan, Finish, Forward, PlanState, Stall
from sockkit.proxy.relay import PENDING_LIMIT, READ_SIZE

pytestmark = pytest.mark.timeout(60)

#: Every blocking socket call in these tests gives up after this long instead of hanging.
IO_TIMEOUT = 10.0
SRC = Path(__file__).resolve().parents[1] / "src"


# --- servers the proxy sits in front of ---------------------------------------------------------


class ThreadServer:
    """A loopback server running ``handle(conn)`` in a thread per client; records recv sizes."""

    def __init__(self, handle) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(IO_TIMEOUT)
        self.address = self.listener.getsockname()
        self.recv_sizes: list[int] = []
        self.received = bytearray()
        self.ended = threading.Event()
        self._handle = handle
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._handle(self, conn)
        except OSError:
            pass
        finally:
            conn.close()
            self.ended.set()

    def recv(self, conn: socket.socket) -> bytes:
        data = conn.recv(65536)
        if data:
            self.recv_sizes.append(len(data))
            self.received += data
        return data

    def close(self) -> None:
        # shutdown wakes the accept() blocked in our thread; close() alone would not.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in [self._accepter, *self._threads]:
            thread.join(IO_TIMEOUT)


def echo(server: ThreadServer, conn: socket.socket) -> None:
    while data := server.recv(conn):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def sink(server: ThreadServer, conn: socket.socket) -> None:
    while server.recv(conn):
        pass


@pytest.fixture
def echo_server():
    server = ThreadServer(echo)
    yield server
    server.close()


@pytest.fixture
def sink_server():
    server = ThreadServer(sink)
    yield server
    server.close()


def connect(proxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def send_in_thread(sock: socket.socket, data: bytes, then_shutdown: bool = True) -> threading.Thread:
    """Send ``data`` while the caller reads (an echo of 1 MiB would otherwise fill both buffers)."""

    def send() -> None:
        try:
            sock.sendall(data)
            if then_shutdown:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


# --- the plan, without sockets ------------------------------------------------------------------


def forwarded(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Forward))


def test_plan_without_faults_forwards_each_chunk_at_once():
    """No faults: each chunk is one write due the moment it arrived; EOF becomes a Finish."""
    plan = DirectionPlan(Faults())
    assert plan.receive(b"abc", 5.0) == [Forward(5.0, b"abc")]
    assert plan.receive(b"", 6.0) == [Finish(6.0)]
    assert plan.state is PlanState.FINISHED
    assert plan.receive(b"late", 7.0) == []


def test_plan_latency_delays_and_keeps_order_under_jitter():
    """With jitter larger than the gap between chunks, later chunks are never due earlier."""
    plan = DirectionPlan(Faults(latency=0.1, jitter=0.09), random.Random(3))
    times = [a.at for i in range(200) for a in plan.receive(b"x", i * 0.001)]
    assert times == sorted(times)
    assert all(at >= i * 0.001 + 0.01 - 1e-9 for i, at in enumerate(times))


def test_plan_slices_and_spaces_pieces():
    """slice=4 with slice_delay: pieces of at most 4 bytes, each at least the delay after the last."""
    plan = DirectionPlan(Faults(slice=4, slice_delay=0.01))
    actions = plan.receive(b"0123456789", 1.0)
    assert [a.data for a in actions] == [b"0123", b"4567", b"89"]
    assert [round(a.at, 6) for a in actions] == [1.0, 1.01, 1.02]


def test_plan_rate_spaces_pieces_by_their_size():
    """rate=1000 B/s: 3000 bytes end up spread over at least 2.95 s of due times."""
    plan = DirectionPlan(Faults(rate=1000))
    actions = plan.receive(bytes(3000), 0.0)
    assert forwarded(actions) == bytes(3000)
    assert actions[-1].at >= 3.0 - len(actions[-1].data) / 1000 - 1e-9
    assert max(len(a.data) for a in actions) <= 50


@pytest.mark.parametrize(("faults", "end"), [
    (Faults(close_after=5), Cut(0.0, CutKind.CLOSE)),
    (Faults(reset_after=5), Cut(0.0, CutKind.RESET)),
    (Faults(stall_after=5), Stall(0.0)),
])
def test_plan_budget_forwards_exactly_n_bytes_then_ends(faults, end):
    """A budget of 5 across chunks: exactly 5 bytes forwarded, then the ending, then nothing."""
    plan = DirectionPlan(faults)
    first = plan.receive(b"abc", 0.0)
    second = plan.receive(b"defgh", 0.0)
    assert forwarded(first + second) == b"abcde"
    assert second[-1] == end
    assert plan.receive(b"more", 1.0) == [] and plan.receive(b"", 1.0) == []


def test_plan_budget_zero_ends_before_any_byte():
    """close_after=0 cuts the connection as soon as it starts."""
    assert DirectionPlan(Faults(close_after=0)).start(2.0) == [Cut(2.0, CutKind.CLOSE)]
    assert DirectionPlan(Faults()).start(2.0) == []


def test_faults_refuse_contradictions():
    """Two stream endings in one direction, or negative values, are errors that name the field."""
    with pytest.raises(ValueError, match="close_after and reset_after"):
        Faults(close_after=1, reset_after=2)
    with pytest.raises(ValueError, match="latency"):
        Faults(latency=-1)
    with pytest.raises(ValueError, match="probability"):
        ProxyFaults(probability=1.5)


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    latency=st.sampled_from([0.0, 0.05]),
    jitter=st.sampled_from([0.0, 0.04]),
    rate=st.sampled_from([None, 100, 100_000]),
    piece=st.sampled_from([None, 1, 7, 64]),
    budget=st.sampled_from([None, 0, 1, 100, 1000]),
    seed=st.integers(0, 1000),
)
def test_plan_properties(chunks, latency, jitter, rate, piece, budget, seed):
    """For any chunks and faults: the output is the input's prefix up to the budget, due times never
    go backwards nor before arrival + latency - jitter, and no write exceeds the piece size."""
    faults = Faults(latency=latency, jitter=jitter, rate=rate, slice=piece, close_after=budget)
    plan = DirectionPlan(faults, random.Random(seed))
    actions = plan.start(0.0)
    arrivals = []
    for i, chunk in enumerate(chunks):
        new = plan.receive(chunk, i * 0.01)
        actions += new
        arrivals += [i * 0.01] * len(new)
    actions += plan.receive(b"", len(chunks) * 0.01)
    data = b"".join(chunks)
    assert forwarded(actions) == (data if budget is None else data[:budget])
    times = [a.at for a in actions]
    assert times == sorted(times)
    for action, arrived in zip(actions, arrivals, strict=False):
        assert action.at >= arrived + latency - jitter - 1e-9
    if faults.piece_size is not None:
        assert all(len(a.data) <= faults.piece_size for a in actions if isinstance(a, Forward))
    ends = [a for a in actions if isinstance(a, Finish | Cut)]
    assert len(ends) == 1 and actions[-1] is ends[0]


# --- the relay over real sockets ----------------------------------------------------------------


def test_bytes_pass_unchanged_without_faults(echo_server):
    """1 MiB through the proxy and back is byte-identical; the client's FIN reaches the server and
    the server's FIN comes back, and the connection is logged as closed by both sides."""
    data = payload(1024 * 1024)
    lines: list[str] = []
    with FaultProxyThread(echo_server.address, log=lines.append) as proxy, connect(proxy) as client:
        sender = send_in_thread(client, data)
        assert read_until_eof(client) == data
        sender.join(IO_TIMEOUT)
        client.close()
        (report,) = proxy.wait_reports(1)
    assert report.upstream.written == report.downstream.written == len(data)
    assert report.outcome == "both sides closed" and not report.faulted
    assert any(line.startswith("#1 127.0.0.1:") and "both sides closed" in line for line in lines)


def test_latency_adds_at_least_the_configured_delay(echo_server):
    """latency=100ms both ways: each round trip takes at least 200 ms."""
    faults = ProxyFaults.both(latency=0.1)
    with FaultProxyThread(echo_server.address, faults) as proxy, connect(proxy) as client:
        for _ in range(3):
            started = time.perf_counter()
            client.sendall(b"ping")
            assert read_exactly(client, 4) == b"ping"
            assert time.perf_counter() - started >= 0.2 * 0.99


def test_jitter_keeps_the_byte_order(echo_server):
    """Jitter larger than the gap between writes still delivers every byte in order."""
    messages = [f"{i:04d};".encode() for i in range(100)]
    faults = ProxyFaults.both(latency=0.02, jitter=0.02)
    with FaultProxyThread(echo_server.address, faults, seed=5) as proxy, connect(proxy) as client:
        for message in messages:
            client.sendall(message)
        assert read_exactly(client, 500) == b"".join(messages)


def test_slicing_writes_pieces_no_bigger_than_n(sink_server):
    """slice=512 with slice-delay: the proxy writes the client's single 8 KiB send as 16 pieces of at
    most 512 bytes, spaced out, so the server needs several recvs for it."""
    data = payload(8192)
    faults = ProxyFaults(upstream=Faults(slice=512, slice_delay=0.02))
    with FaultProxyThread(sink_server.address, faults) as proxy:
        with connect(proxy) as client:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b""
        (report,) = proxy.wait_reports(1)
    assert sink_server.ended.wait(IO_TIMEOUT)
    assert bytes(sink_server.received) == data
    assert report.upstream.largest_write <= 512 and report.upstream.written == len(data)
    assert len(sink_server.recv_sizes) >= 2


def test_rate_limit_bounds_throughput(echo_server):
    """256 KiB upstream at 512 KiB/s cannot come back in less than ~0.4 s."""
    data = payload(256 * 1024)
    faults = ProxyFaults(upstream=Faults(rate=512 * 1024))
    with FaultProxyThread(echo_server.address, faults) as proxy, connect(proxy) as client:
        started = time.perf_counter()
        sender = send_in_thread(client, data)
        assert read_until_eof(client) == data
        elapsed = time.perf_counter() - started
        sender.join(IO_TIMEOUT)
    assert elapsed >= 0.4


def test_close_after_gives_eof_after_exactly_n_bytes(echo_server):
    """down close-after 1000: the client reads exactly the first 1000 echoed bytes, then EOF."""
    data = payload(4000)
    with FaultProxyThread(echo_server.address, ProxyFaults(downstream=Faults(close_after=1000))) as proxy:
        with connect(proxy) as client:
            client.sendall(data)
            assert read_until_eof(client) == data[:1000]
        (report,) = proxy.wait_reports(1)
    assert report.outcome == "downstream close after 1000 B"


def test_upstream_close_after_ends_the_servers_stream(sink_server):
    """up close-after 100: the server receives exactly 100 bytes and then EOF (a FIN, not a reset)."""
    with FaultProxyThread(sink_server.address, ProxyFaults(upstream=Faults(close_after=100))) as proxy:
        with connect(proxy) as client:
            client.sendall(payload(300))
            assert read_until_eof(client) == b""
        assert sink_server.ended.wait(IO_TIMEOUT)
    assert bytes(sink_server.received) == payload(300)[:100]


def test_reset_after_gives_connection_reset(echo_server):
    """down reset-after 1000: the client gets the first 1000 bytes, then ConnectionResetError."""
    data = payload(4000)
    received = bytearray()
    with FaultProxyThread(echo_server.address, ProxyFaults(downstream=Faults(reset_after=1000))) as proxy:
        with connect(proxy) as client:
            client.sendall(data)
            with pytest.raises(ConnectionResetError):
                while chunk := client.recv(65536):
                    received += chunk
        (report,) = proxy.wait_reports(1)
    assert bytes(received) == data[:1000]
    assert report.outcome == "downstream reset after 1000 B"


def test_stall_after_delivers_n_bytes_then_nothing(echo_server):
    """down stall-after 1000: exactly 1000 bytes arrive, then nothing (no data, no EOF) for 0.5 s."""
    data = payload(4000)
    with FaultProxyThread(echo_server.address, ProxyFaults(downstream=Faults(stall_after=1000))) as proxy:
        with connect(proxy) as client:
            client.sendall(data)
            assert read_exactly(client, 1000) == data[:1000]
            client.settimeout(0.5)
            with pytest.raises(TimeoutError):
                client.recv(65536)
            client.settimeout(IO_TIMEOUT)
            client.shutdown(socket.SHUT_WR)
        # The client's FIN reaches the server, whose FIN is swallowed: the connection still ends.
        (report,) = proxy.wait_reports(1)
    assert report.downstream.written == 1000
    assert report.downstream.ending == "stalled, source closed"


def test_pending_output_stays_bounded(echo_server):
    """With 100 ms latency, a 1 MiB upload never has more than 64 KiB + one read waiting in a direction."""
    data = payload(1024 * 1024)
    with FaultProxyThread(echo_server.address, ProxyFaults.both(latency=0.1)) as proxy:
        with connect(proxy) as client:
            client.settimeout(60)
            sender = send_in_thread(client, data)
            assert read_until_eof(client) == data
            sender.join(IO_TIMEOUT)
        (report,) = proxy.wait_reports(1)
    for direction in (report.upstream, report.downstream):
        assert direction.peak_pending <= PENDING_LIMIT + READ_SIZE


def test_probability_picks_some_connections(echo_server):
    """probability 0.5 with a seed: of 20 connections some are cut at once and the others echo."""
    faults = ProxyFaults(downstream=Faults(close_after=0), probability=0.5)
    echoed = 0
    with FaultProxyThread(echo_server.address, faults, seed=11) as proxy:
        for i in range(20):
            with connect(proxy) as client:
                try:
                    client.sendall(b"hi")
                    client.shutdown(socket.SHUT_WR)
                    echoed += read_until_eof(client) == b"hi"
                except OSError:
                    pass
            proxy.wait_reports(i + 1)
        reports = proxy.reports
    faulted = sum(report.faulted for report in reports)
    assert 0 < faulted < 20
    assert echoed == 20 - faulted


def test_unreachable_target_closes_the_client():
    """A target that refuses: the client is closed and the report says why."""
    spare = socket.create_server(("127.0.0.1", 0))
    address = spare.getsockname()
    spare.close()
    with FaultProxyThread(address) as proxy:
        with connect(proxy) as client, contextlib.suppress(ConnectionResetError):
            assert read_until_eof(client) == b""
        (report,) = proxy.wait_reports(1)
    assert report.outcome.startswith("target unreachable")


def test_async_api_in_the_same_loop():
    """``async with FaultProxy(...)`` in front of an asyncio echo server: downstream close-after 5
    gives the asyncio client exactly ``hello`` and then EOF."""

    async def scenario() -> bytes:
        async def handle(reader, writer):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            target = server.sockets[0].getsockname()[:2]
            async with FaultProxy(target, ProxyFaults(downstream=Faults(close_after=5))) as proxy:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"hello world")
                got = await asyncio.wait_for(reader.read(), IO_TIMEOUT)
                writer.close()
                await writer.wait_closed()
        return got

    assert asyncio.run(scenario()) == b"hello"


# --- the command ------------------------------------------------------------------------------


def parse_cli(*argv: str):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["proxy", *argv])


def test_cli_units_and_direction_overrides():
    """Sizes take binary suffixes, durations default to ms, and --down-X overrides --X."""
    assert parse_size("512k") == 512 * 1024 and parse_size("1M") == 1024**2 and parse_size("100") == 100
    assert parse_duration("50") == parse_duration("50ms") == 0.05 and parse_duration("1.5s") == 1.5
    assert parse_listen("9000") == ("127.0.0.1", 9000) == parse_listen(":9000")
    assert parse_listen("[::1]:0") == ("::1", 0)
    faults = faults_from(parse_cli(":0", "127.0.0.1:1", "--latency", "50ms", "--down-latency", "10",
                                   "--up-reset-after", "2k"))
    assert faults.upstream == Faults(latency=0.05, reset_after=2048)
    assert faults.downstream == Faults(latency=0.01)


def test_cli_registered_in_sockkit():
    """``sockkit proxy`` is one of the CLI's commands."""
    from sockkit import cli

    assert cli.COMMANDS["proxy"][0] == "sockkit.commands.proxy"


def start_cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # The command's own entry point: same register()/run() as ``sockkit proxy``.
    return subprocess.Popen([sys.executable, "-m", "sockkit.commands.proxy", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class RunningCli:
    """The command in a subprocess; stdout line by line with a timeout (a thread reads the pipe).

    Leaving the block kills the process if a test failed before stopping it, and reaps it.
    """

    def __init__(self, *argv: str) -> None:
        self.process = start_cli(*argv)
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)

    def next_line(self, timeout: float = IO_TIMEOUT) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from the proxy command within {timeout} s") from None

    def stop(self, signum: int) -> tuple[int, str]:
        """Send ``signum``; returns the exit status and stderr."""
        self.process.send_signal(signum)
        status = self.process.wait(IO_TIMEOUT)
        return status, self.process.stderr.read()

    def __enter__(self) -> RunningCli:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            self.process.kill()  # our own child, by its Popen handle
        self.process.wait(IO_TIMEOUT)
        self._thread.join(IO_TIMEOUT)
        self.process.stdout.close()
        self.process.stderr.close()


def test_cli_prints_its_port_relays_and_exits_0_on_sigterm(echo_server):
    """The command prints ``proxy listening on HOST:PORT -> TARGET`` with the real port, relays
    through it, logs the connection, and exits 0 on SIGTERM."""
    host, port = echo_server.address
    with RunningCli("127.0.0.1:0", f"{host}:{port}", "--latency", "10ms") as cli:
        line = cli.next_line()
        assert line.startswith("proxy listening on 127.0.0.1:") and line.rstrip().endswith(f"-> {host}:{port}")
        proxy_port = int(line.split()[3].rsplit(":", 1)[1])
        assert proxy_port != 0
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=IO_TIMEOUT) as client:
            client.sendall(b"through")
            client.shutdown(socket.SHUT_WR)
            assert read_until_eof(client) == b"through"
        assert cli.next_line().startswith("faults: up: latency=10ms")
        # The proxy notices the end a moment after we do: wait for its line, not for a clock.
        logged = cli.next_line()
        assert logged.startswith("#1 127.0.0.1:") and "both sides closed" in logged, logged
        status, err = cli.stop(signal.SIGTERM)
    assert status == 0, err


def test_cli_sigint_also_exits_0(echo_server):
    """Ctrl-C (SIGINT) stops the proxy cleanly too, closing a connection that is still open."""
    with RunningCli("0", "{}:{}".format(*echo_server.address), "--quiet") as cli:
        line = cli.next_line()
        assert line.startswith("proxy listening on 127.0.0.1:")
        proxy_port = int(line.split()[3].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=IO_TIMEOUT) as client:
            client.sendall(b"x")
            assert read_exactly(client, 1) == b"x"  # relayed, so the proxy holds the connection
            status, err = cli.stop(signal.SIGINT)
            assert read_until_eof(client) == b""
    assert status == 0, err


def test_cli_refuses_non_loopback_and_bad_values():
    """Listening beyond loopback needs --insecure; contradicting faults exit 2 with the reason."""
    for argv, message in [(("0.0.0.0:0", "127.0.0.1:1"), "not loopback"),
                          (("0", "127.0.0.1:1", "--close-after", "1", "--stall-after", "2"), "stall_after")]:
        process = start_cli(*argv)
        _, err = process.communicate(timeout=IO_TIMEOUT)
        assert process.returncode == 2 and message in err


# --- limits: numbers, idle connections, loops (issue 16, item 12) ---------------------------------


def test_absurd_numbers_are_usage_errors_not_tracebacks():
    """--rate with a 400-digit number (a float overflow before) and durations past a day exit 2 with
    the flag named; nothing prints a traceback."""
    for argv, message in [(("--rate", "9" * 400), "too large"), (("--latency", "9" * 400 + "s"), "too long"),
                          (("--down-slice", "2g" * 1), None), (("--idle-timeout", "nan"), "seconds"),
                          (("--idle-timeout", "1e400"), "seconds")]:
        process = start_cli("0", "127.0.0.1:1", *argv, "--close-after", "1")
        if message is None:  # a sane value: the proxy starts; stop it
            assert process.stdout.readline().startswith("proxy listening on")
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=IO_TIMEOUT)
            continue
        _, err = process.communicate(timeout=IO_TIMEOUT)
        assert process.returncode == 2 and message in err and "Traceback" not in err, err
        assert f"argument {argv[0]}" in err
    assert parse_size("1024g") == 1 << 40
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("1025g")


def test_a_connection_whose_target_closed_is_closed_when_idle():
    """The target closes at once and the client stays silent: the proxy passes the FIN on, and once
    nothing has moved for the idle timeout it closes its client side too (before, the connection and
    its two descriptors stayed, the target's side in CLOSE_WAIT, for as long as the client did)."""
    server = ThreadServer(lambda server, conn: None)  # accept, then close
    try:
        with FaultProxyThread(server.address, idle_timeout=0.5) as proxy, connect(proxy) as client:
            assert read_until_eof(client) == b""  # the target's FIN, passed on
            began = time.monotonic()
            (report,) = proxy.wait_reports(1)
            assert report.outcome == "idle for 0.5 s, closed"
            assert 0.4 <= time.monotonic() - began < IO_TIMEOUT
    finally:
        server.close()


def test_traffic_keeps_a_connection_from_being_idle(echo_server):
    """Bytes moving either way reset the idle clock: 10 round trips 0.2 s apart under a 0.5 s timeout."""
    with FaultProxyThread(echo_server.address, idle_timeout=0.5) as proxy, connect(proxy) as client:
        for _ in range(10):
            client.sendall(b"ping")
            assert read_exactly(client, 4) == b"ping"
            time.sleep(0.2)  # the gap under test, not a synchronisation
        assert proxy.reports == []


def lab_or_skip():
    reason = netlab.unavailable()
    if reason:
        pytest.skip(reason)
    return netlab.Lab()


def test_a_target_that_is_the_proxys_own_address_is_refused():
    """LISTEN and TARGET the same (literally, or 0.0.0.0 against a loopback name): a usage error at
    start. Before, the proxy started, and one client built a chain of 1,024 connections through it.
    Fixed ports, so inside a private network namespace."""
    with lab_or_skip() as lab, lab.inside(lab.front):
        for argv in (("127.0.0.1:9000", "127.0.0.1:9000"), ("0.0.0.0:9000", "localhost:9000", "--insecure")):
            process = start_cli(*argv)
            try:
                _, err = process.communicate(timeout=IO_TIMEOUT)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
            assert process.returncode == 2 and "own address" in err, (argv, err)


def test_a_loop_through_another_address_of_this_host_stops_at_once():
    """LISTEN 0.0.0.0:9000, TARGET another address this same host holds: not seen at start, so the
    proxy must see its own connection come back and close it. One client, two connections logged
    (its own and the loop refused), not a chain."""
    with lab_or_skip() as lab:
        lab.add_address(lab.front, "10.99.0.1")
        with lab.inside(lab.front), RunningCli("0.0.0.0:9000", "10.99.0.1:9000", "--insecure") as cli:
            assert cli.next_line().startswith("proxy listening on 0.0.0.0:9000")
            assert cli.next_line().startswith("faults:")
            with socket.create_connection(("127.0.0.1", 9000), timeout=IO_TIMEOUT) as client:
                client.sendall(b"hello")
                with contextlib.suppress(ConnectionResetError):
                    assert read_until_eof(client) == b""
            lines = [cli.next_line(), cli.next_line()]
            status, err = cli.stop(signal.SIGTERM)
        assert any(line.startswith("#2 refused: it comes from this proxy itself") for line in lines), lines
        assert any(line.startswith("#1 127.0.0.1:") for line in lines), lines
        assert status == 0, err


# --- sending the PROXY protocol header ----------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_send_proxy_puts_the_clients_address_first(version):
    """--send-proxy(-v2): the target reads one PROXY header naming the client's own address and port
    and the proxy's listening address, then exactly the client's bytes."""
    seen = queue.Queue()

    def read_header(server, conn):
        reader = HeaderReader()
        parsed = None
        while parsed is None:
            parsed = reader.receive(conn.recv(4096))
        rest = parsed.rest
        while len(rest) < 5:
            rest += conn.recv(4096)
        seen.put((parsed.header, rest))
        conn.sendall(b"ok")

    server = ThreadServer(read_header)
    try:
        with FaultProxyThread(server.address, send_proxy=version) as proxy, connect(proxy) as client:
            client.sendall(b"hello")
            assert read_exactly(client, 2) == b"ok"
            header, rest = seen.get(timeout=IO_TIMEOUT)
            assert header.version == version
            assert header.source == Endpoint(*client.getsockname()[:2])
            assert header.destination == Endpoint(*proxy.address)
            assert rest == b"hello"
    finally:
        server.close()


def test_send_proxy_flags_exclude_each_other():
    assert parse_cli("0", "127.0.0.1:1", "--send-proxy").send_proxy == 1
    assert parse_cli("0", "127.0.0.1:1", "--send-proxy-v2").send_proxy == 2
    assert parse_cli("0", "127.0.0.1:1").send_proxy is None
    process = start_cli("0", "127.0.0.1:1", "--send-proxy", "--send-proxy-v2")
    _, err = process.communicate(timeout=IO_TIMEOUT)
    assert process.returncode == 2 and "not allowed with" in err
