"""The asyncio shell around the fault plan: accept, connect to the target, pump bytes both ways.

Rule: the relay decides nothing about faults. Each direction feeds what it reads to a
``DirectionPlan`` together with ``loop.time()``, queues the actions it gets back, and a writer
sleeps until each action's stamp and carries it out. Every write is one ``sock_sendall`` of one
piece on a ``TCP_NODELAY`` socket, so a slice on the plan is a separate write on the wire.

Rule: memory is bounded. A direction stops reading its source while ``PENDING_LIMIT`` bytes wait
to be written (latency, a rate limit or a slow destination all show up there), exactly as a
kernel stops reading when its socket buffer is full; the source then feels TCP backpressure.

Rule: the code that opens a socket closes it. ``serve_connection`` owns both sockets of a
connection and closes them on every path, including cancellation when the proxy stops, and a
connection on which no byte moved either way for ``idle_timeout`` (a target that closed while its
client stays silent would otherwise sit in CLOSE_WAIT for good).

Rule: the proxy never relays to itself. A TARGET that is its own listening address is refused
at start; one that only turns out to be (another name or address of this machine) is caught per
connection: every outgoing socket is bound before it connects, and a client arriving from one of
those ports on this host is our own connection come back, closed at once instead of opening the
next link of a chain.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import ipaddress
import random
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sockkit.net import address_text, open_listener, split_host_port
from sockkit.protocols.proxy_header import Endpoint, format_v1, format_v2
from sockkit.proxy.faults import (
    NO_FAULTS,
    Action,
    Cut,
    CutKind,
    DirectionPlan,
    Faults,
    Finish,
    Forward,
    PlanState,
    ProxyFaults,
    Stall,
)

#: Bytes asked of the kernel per recv. Small next to ``PENDING_LIMIT`` so one read cannot
#: overshoot the bound by much.
READ_SIZE = 16 * 1024
#: Unwritten bytes per direction before we stop reading its source: the 64 KiB high-water mark of
#: asyncio, Twisted and uvicorn. With latency L this also caps a direction at PENDING_LIMIT / L
#: bytes per second, as a 64 KiB TCP window would.
PENDING_LIMIT = 64 * 1024
#: With small slices one read becomes many actions; read at most this many pieces at a time so the
#: action queue stays short as well as the byte count.
PIECES_PER_READ = 64
#: Giving up on a target that does not answer a connect.
CONNECT_TIMEOUT = 10.0
#: After a close fault sends both FINs, how long we keep reading (and discarding) so that our own
#: close() does not turn into an RST because of unread data.
CLOSE_GRACE = 2.0
#: Before a reset fault, how long we wait for the kernel to hand the last forwarded bytes to the
#: peer (an RST discards whatever is still in our send queue).
RESET_FLUSH_SECONDS = 1.0
#: Poll interval while waiting for that send queue to empty (no event tells us).
RESET_FLUSH_POLL = 0.005
#: Simultaneous connections; past it a client is closed at once and a line says so. Each one costs
#: two descriptors and up to 2 * (PENDING_LIMIT + READ_SIZE) bytes.
MAX_CONNECTIONS = 1024
#: Reports kept for ``FaultProxy.reports`` (tests read recent ones; a long-running proxy must not
#: grow without bound).
REPORTS_KEPT = 1000
#: Pause after a failed accept (EMFILE...), so a full descriptor table is not a busy loop.
ACCEPT_BACKOFF = 0.1
#: How long ``FaultProxyThread`` waits for the proxy to bind or to stop.
THREAD_TIMEOUT = 10.0
#: A connection on which no byte moves in either direction for this long is closed (as ``serve``'s
#: ``--idle-timeout``): half-closed or silent connections must not hold descriptors for good.
DEFAULT_IDLE_SECONDS = 300.0


class LoopError(ValueError):
    """TARGET is the proxy's own listening address: every connection would come back to it."""


@dataclass(frozen=True, slots=True)
class DirectionReport:
    """What one direction did: bytes written, the largest single write, the most bytes ever waiting
    to be written (bounded by ``PENDING_LIMIT`` plus one read), how it ended."""

    written: int
    largest_write: int
    peak_pending: int
    ending: str


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    """One proxied connection, as logged when it ended."""

    number: int
    client: str
    faulted: bool
    faults: str
    upstream: DirectionReport
    downstream: DirectionReport
    outcome: str
    seconds: float

    def line(self, target: str) -> str:
        return (f"#{self.number} {self.client} -> {target} [{self.faults}] "
                f"up {self.upstream.written} B, down {self.downstream.written} B "
                f"in {self.seconds:.2f} s: {self.outcome}")


class Pump:
    """One direction of one connection: reads ``src``, asks the plan, writes ``dst`` on schedule."""

    def __init__(self, name: str, src: socket.socket, dst: socket.socket, plan: DirectionPlan,
                 activity: Activity | None = None) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.plan = plan
        self.activity = activity or Activity()
        self.written = 0
        self.largest_write = 0
        self.peak_pending = 0
        self.ending = "open"
        self._queue: collections.deque[Action] = collections.deque()
        #: Bytes queued in ``Forward`` actions and not yet written (bounded by ``PENDING_LIMIT``).
        self._pending = 0
        self._queued = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        piece = plan.faults.piece_size
        self._read_size = READ_SIZE if piece is None else max(1, min(READ_SIZE, piece * PIECES_PER_READ))

    async def read_source(self) -> None:
        """Feed the plan until the source ends its stream (or the plan cuts the connection)."""
        loop = asyncio.get_running_loop()
        self._schedule(self.plan.start(loop.time()))
        while self.plan.state is not PlanState.CUT:
            while self._pending >= PENDING_LIMIT:
                self._room.clear()
                await self._room.wait()
            data = await loop.sock_recv(self.src, self._read_size)
            self.activity.moved()
            self._schedule(self.plan.receive(data, loop.time()))
            if not data:
                if self.plan.state is PlanState.STALLED:
                    self.ending = "stalled, source closed"
                return

    async def write_destination(self) -> Cut | None:
        """Carry out the queued actions on time; returns the ``Cut`` that ends the connection, if any."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            action = self._queue[0]
            delay = action.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._queue.popleft()
            if isinstance(action, Forward):
                await loop.sock_sendall(self.dst, action.data)
                self.activity.moved()
                self.written += len(action.data)
                self.largest_write = max(self.largest_write, len(action.data))
                self._pending -= len(action.data)
                if self._pending < PENDING_LIMIT:
                    self._room.set()
            elif isinstance(action, Finish):
                self.ending = "eof passed on"
                with contextlib.suppress(OSError):
                    self.dst.shutdown(socket.SHUT_WR)
                return None
            elif isinstance(action, Stall):
                self.ending = f"stalled after {self.written} B"
                return None
            else:
                self.ending = f"{action.kind.value} after {self.written} B"
                return action

    def report(self) -> DirectionReport:
        return DirectionReport(self.written, self.largest_write, self.peak_pending, self.ending)

    def _schedule(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Forward):
                self._pending += len(action.data)
            self._queue.append(action)
        self.peak_pending = max(self.peak_pending, self._pending)
        if actions:
            self._queued.set()


class FaultProxy:
    """A TCP proxy on loopback that injects ``faults`` between its clients and ``target``.

    ``async with FaultProxy(("127.0.0.1", port), ProxyFaults.both(latency=0.05)) as proxy:``
    then connect to ``proxy.port``. ``reports`` holds one ``ConnectionReport`` per ended
    connection; ``log`` (if given) receives the same as one line each, and ``on_report`` (if
    given) the report itself, from the event loop's thread.
    """

    def __init__(self, target: str | tuple[str, int], faults: ProxyFaults | None = None, *,
                 listen: tuple[str, int] = ("127.0.0.1", 0), log: Callable[[str], None] | None = None,
                 seed: int | None = None, on_report: Callable[[ConnectionReport], None] | None = None,
                 idle_timeout: float | None = DEFAULT_IDLE_SECONDS, send_proxy: int | None = None) -> None:
        if send_proxy not in (None, 1, 2):
            raise ValueError(f"send_proxy is the PROXY protocol version, 1 or 2, not {send_proxy!r}")
        if isinstance(target, str):
            host, port = split_host_port(target, 0)
            if not port:
                raise ValueError(f"target {target!r} needs a port: HOST:PORT")
            target = (host, port)
        self.target = target
        self.target_text = f"[{target[0]}]:{target[1]}" if ":" in target[0] else f"{target[0]}:{target[1]}"
        self.faults = faults or ProxyFaults()
        self.listen = listen
        self.log = log
        self.on_report = on_report
        self.reports: collections.deque[ConnectionReport] = collections.deque(maxlen=REPORTS_KEPT)
        self._rng = random.Random(seed)
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task | None = None
        self._connections: set[asyncio.Task] = set()
        self._count = 0
        #: None: no idle limit.
        self.idle_timeout = idle_timeout
        #: PROXY protocol version to put before each client's bytes (HAProxy's send-proxy), or None.
        self.send_proxy = send_proxy
        #: Local ports of our open connections to the target: a client from one of them is ourselves.
        self._own_ports: set[int] = set()

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("proxy is not listening yet: use 'async with' or await start()")
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def address_text(self) -> str:
        return address_text(self._listener)

    async def start(self) -> None:
        """Bind and start accepting; returns once the port is open. Raises LoopError if TARGET is
        the address just bound."""
        self._listener = open_listener(*self.listen)
        self._listener.setblocking(False)
        try:
            await self._refuse_self_target()
        except BaseException:
            self._listener.close()
            raise
        self._accepting = asyncio.create_task(self._accept_forever(), name="proxy-accept")

    async def close(self) -> None:
        """Stop accepting, end every connection (their sockets close), release the port."""
        tasks = [task for task in (self._accepting, *self._connections) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _refuse_self_target(self) -> None:
        host, port = self.address
        if port != self.target[1]:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(self.target[0], port, type=socket.SOCK_STREAM)
        except OSError:
            return  # unresolvable now: connecting will say so, per connection
        listening = ipaddress.ip_address(host)
        for *_, sockaddr in infos:
            target = ipaddress.ip_address(sockaddr[0].split("%")[0])
            if target == listening or target.is_unspecified or (listening.is_unspecified and target.is_loopback):
                raise LoopError(f"TARGET {self.target_text} is this proxy's own address ({self.address_text}): "
                                "every connection would be relayed back into the proxy")

    def _is_own(self, client: socket.socket, address) -> bool:
        """A connection this proxy made to its target that came back to its own listener."""
        if not isinstance(address, tuple) or address[1] not in self._own_ports:
            return False
        try:
            return client.getsockname()[0] == address[0]
        except OSError:
            return False

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, address = await loop.sock_accept(self._listener)
            except OSError as exc:
                self._say(f"accept failed: {exc}; retrying in {ACCEPT_BACKOFF} s")
                await asyncio.sleep(ACCEPT_BACKOFF)
                continue
            self._count += 1
            if self._is_own(client, address):
                client.close()
                self._say(f"#{self._count} refused: it comes from this proxy itself ({address[0]}:{address[1]}): "
                          f"TARGET {self.target_text} leads back here")
                continue
            if len(self._connections) >= MAX_CONNECTIONS:
                client.close()
                self._say(f"#{self._count} refused: {MAX_CONNECTIONS} connections already open")
                continue
            task = asyncio.create_task(self.serve_connection(client, address, self._count))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def serve_connection(self, client: socket.socket, address, number: int) -> None:
        """Proxy one client until both directions end, a fault cuts it, or the proxy stops."""
        started = time.monotonic()
        chosen = self._rng.random() < self.faults.probability  # drawn every time: a seed replays a run
        faulted = chosen and (self.faults.upstream.active or self.faults.downstream.active)
        up = self.faults.upstream if faulted else NO_FAULTS
        down = self.faults.downstream if faulted else NO_FAULTS
        client_text = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        upstream = downstream = None
        server: socket.socket | None = None
        outcome = "proxy stopped"
        try:
            client.setblocking(False)
            _no_delay(client)
            try:
                server = await self._connect_target()
            except (OSError, TimeoutError) as exc:
                outcome = f"target unreachable: {exc or 'timed out'}"
                return
            if self.send_proxy:
                await asyncio.get_running_loop().sock_sendall(server, self._proxy_header(client, address))
            activity = Activity()
            upstream = Pump("upstream", client, server, self._plan(up), activity)
            downstream = Pump("downstream", server, client, self._plan(down), activity)
            outcome = await _relay(upstream, downstream, client, server, self.idle_timeout)
        except OSError as exc:
            outcome = f"target error before relaying ({exc.__class__.__name__}: {exc.strerror or exc})"
        finally:
            for sock in (client, server):
                if sock is not None:
                    if sock is server:
                        with contextlib.suppress(OSError):
                            self._own_ports.discard(sock.getsockname()[1])
                    sock.close()
            empty = DirectionReport(0, 0, 0, "never started")
            report = ConnectionReport(
                number=number, client=client_text, faulted=faulted,
                faults=ProxyFaults(up, down).describe() if faulted else "no faults",
                upstream=upstream.report() if upstream else empty,
                downstream=downstream.report() if downstream else empty,
                outcome=outcome, seconds=time.monotonic() - started)
            self.reports.append(report)
            self._say(report.line(self.target_text))
            if self.on_report is not None:
                self.on_report(report)

    def _proxy_header(self, client: socket.socket, address) -> bytes:
        """The client as HAProxy's send-proxy(-v2) would present it: its address, and the one it reached."""
        source = Endpoint(address[0], address[1])
        here = client.getsockname()
        destination = Endpoint(here[0], here[1])
        return format_v1(source, destination) if self.send_proxy == 1 else format_v2(source, destination)

    def _plan(self, faults: Faults) -> DirectionPlan:
        return DirectionPlan(faults, random.Random(self._rng.random()))

    async def _connect_target(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        host, port = self.target
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: Exception = OSError(f"no address for {host}")
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                # Bound first, so the port is known before the connection can reach our own listener.
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                self._own_ports.add(sock.getsockname()[1])
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.sock_connect(sock, sockaddr)
            except (OSError, TimeoutError) as exc:
                _close_own(sock, self._own_ports)
                error = exc
                continue
            except BaseException:
                _close_own(sock, self._own_ports)
                raise
            _no_delay(sock)
            return sock
        raise error

    def _say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)


def _close_own(sock: socket.socket, own_ports: set[int]) -> None:
    with contextlib.suppress(OSError):
        own_ports.discard(sock.getsockname()[1])
    sock.close()


class Activity:
    """When a byte (or an end of stream) last moved in either direction of one connection."""

    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def moved(self) -> None:
        self.last = asyncio.get_running_loop().time()


async def _watch_idle(activity: Activity, seconds: float) -> str:
    """Returns once nothing has moved for ``seconds``."""
    loop = asyncio.get_running_loop()
    while (left := activity.last + seconds - loop.time()) > 0:
        await asyncio.sleep(left)
    return f"idle for {seconds:g} s, closed"


async def _relay(upstream: Pump, downstream: Pump, client: socket.socket, server: socket.socket,
                 idle_timeout: float | None = None) -> str:
    """Run both pumps; returns how the connection ended. Sockets stay open for the caller to close."""
    roles = {}
    for pump in (upstream, downstream):
        roles[asyncio.create_task(pump.read_source())] = (pump, "read")
        roles[asyncio.create_task(pump.write_destination())] = (pump, "write")
    running = set(roles)
    watchdogs = set()
    if idle_timeout is not None:
        watchdog = asyncio.create_task(_watch_idle(upstream.activity, idle_timeout))
        roles[watchdog] = (upstream, "idle")
        watchdogs.add(watchdog)
        running.add(watchdog)
    try:
        while running - watchdogs:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                pump, role = roles[task]
                if role == "idle":
                    return task.result()
                exc = task.exception()
                if exc is not None:
                    if not isinstance(exc, OSError):
                        raise exc
                    side = "client" if (pump.src if role == "read" else pump.dst) is client else "target"
                    await _cancel(running)
                    _reset(client, server)
                    return f"{side} error ({exc.__class__.__name__}: {exc.strerror or exc}), both sides reset"
                cut = task.result()
                if isinstance(cut, Cut):
                    await _cancel(running)
                    await _cut(cut, pump, client, server)
                    return f"{pump.name} {cut.kind.value} after {pump.written} B"
        return "both sides closed"
    finally:
        await _cancel(set(roles))


async def _cancel(tasks: set[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _cut(cut: Cut, pump: Pump, client: socket.socket, server: socket.socket) -> None:
    if cut.kind is CutKind.RESET:
        await _flush_send_queue(pump.dst)
        _reset(client, server)
        return
    for sock in (client, server):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    # Read (and drop) until both peers close too, so closing does not RST over unread data.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_GRACE):
            await asyncio.gather(_discard_until_eof(client), _discard_until_eof(server))


async def _discard_until_eof(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):
        while await loop.sock_recv(sock, READ_SIZE):
            pass


async def _flush_send_queue(sock: socket.socket) -> None:
    """Wait (bounded) until the kernel has no unsent bytes for ``sock``."""
    deadline = time.monotonic() + RESET_FLUSH_SECONDS
    while time.monotonic() < deadline:
        try:
            unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return
        if unsent == 0:
            return
        await asyncio.sleep(RESET_FLUSH_POLL)


def _reset(*socks: socket.socket) -> None:
    """Make the coming close() send an RST (SO_LINGER on, timeout 0) instead of a FIN."""
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _no_delay(sock: socket.socket) -> None:
    # No Nagle: a slice must leave as its own segment, and latency must be ours, not the kernel's.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FaultProxyThread:
    """A ``FaultProxy`` running on its own event loop in a thread, for blocking tests.

    ``with FaultProxyThread(("127.0.0.1", port), faults) as proxy: connect(proxy.port)``.
    Leaving the block stops the proxy and closes every connection it holds.
    """

    def __init__(self, target: str | tuple[str, int], faults: ProxyFaults | None = None, **options) -> None:
        self._reported = threading.Condition()
        self._report_count = 0
        #: Copies of the proxy's reports, kept under ``_reported``: the loop thread appends them.
        self._reports: collections.deque[ConnectionReport] = collections.deque(maxlen=REPORTS_KEPT)
        self.proxy = FaultProxy(target, faults, on_report=self._count_report, **options)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def address(self) -> tuple[str, int]:
        return self.proxy.address

    @property
    def reports(self) -> list[ConnectionReport]:
        with self._reported:
            return list(self._reports)

    def wait_reports(self, count: int, timeout: float = THREAD_TIMEOUT) -> list[ConnectionReport]:
        """Block until ``count`` connections have ended (or ``timeout``); returns the reports so far."""
        with self._reported:
            self._reported.wait_for(lambda: self._report_count >= count, timeout)
        return self.reports

    def _count_report(self, report: ConnectionReport) -> None:
        with self._reported:
            self._report_count += 1
            self._reports.append(report)
            self._reported.notify_all()

    def __enter__(self) -> FaultProxyThread:
        self._thread.start()
        if not self._ready.wait(THREAD_TIMEOUT):
            raise TimeoutError(f"fault proxy did not start within {THREAD_TIMEOUT} s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(THREAD_TIMEOUT)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.proxy.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.proxy.close()
