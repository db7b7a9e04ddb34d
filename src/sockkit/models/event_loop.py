"""asyncio (and uvloop) as a server model: a Protocol per connection, no streams.

Protocols, not ``asyncio.streams``: the hot path is ``data_received -> receive -> write`` with
no coroutine, future or extra buffer per message, which is what keeps this model within a few
percent of a bare Protocol echo. ``Wait`` is ``call_later``, and while it runs the transport is
paused and whatever still arrives is kept, not handed to the service, until it is over
(``actions.Wait``'s rule; ``Wait.then``'s reply then goes ahead of the queued actions). ``SendFile`` is the loop's
zero-copy ``sendfile`` where the loop has one; uvloop has none (uvloop#228), so there the driver
lets the transport's buffer drain and calls ``os.sendfile`` on the transport's socket itself,
waiting for writability on a ``dup`` of its descriptor (the loop refuses watchers on a descriptor a
transport owns). Under TLS the bytes are encrypted in user space: chunked reads written under
flow control. When the transport's buffer passes its high-water mark we stop
reading that client, so one client that never reads cannot grow the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque

from sockkit.catalog import uvloop_installed
from sockkit.lifecycle import peer_of
from sockkit.models.accept import AcceptThrottle
from sockkit.models.settings import HIGH_WATER, Server
from sockkit.net import BACKLOG
from sockkit.services.actions import Close, Reply, Send, SendFile, Wait, as_actions

#: Chunk read from disk per write when the loop has no zero-copy sendfile.
FILE_CHUNK = 1 << 20
#: Most bytes one os.sendfile call may send before the driver yields to the loop: a reader as
#: fast as loopback never makes the socket block, so without a bound one transfer would starve
#: every other connection. 4 MiB is the largest socket send buffer here (net.ipv4.tcp_wmem).
SENDFILE_SLICE = 4 << 20


class Driver(asyncio.Protocol):
    """Carries out one connection's actions on an asyncio transport."""

    __slots__ = (
        "active",
        "busy",
        "closed",
        "conn",
        "drain",
        "held_input",
        "hub",
        "mirrors",
        "paused_writing",
        "pending",
        "pending_request",
        "quiet_ticks",
        "reading",
        "request_began",
        "transport",
    )

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.conn = None
        self.pending: deque = deque()  # actions waiting behind a Wait or a file send
        self.held_input: list[bytes] | None = None  # while a Wait runs: input kept from the service
        self.busy = False  # a Wait or a file send is in progress
        self.paused_writing = False
        self.drain: asyncio.Future | None = None
        self.active = True
        self.quiet_ticks = 0
        self.closed = False
        self.reading = True
        self.pending_request = None
        self.mirrors = False
        self.request_began = 0.0  # loop time the unfinished request began (0: none)

    # -- transport callbacks ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        hub = self.hub
        transport.set_write_buffer_limits(high=HIGH_WATER)
        if len(hub.drivers) >= hub.limits.max_connections or not hub.accepting:
            reply = hub.service.busy_reply()
            if reply:
                transport.write(reply)
            transport.close()
            self.closed = True
            return
        peer = peer_of(transport.get_extra_info("peername"))
        hub.drivers.add(self)
        hub.log.connected(peer)
        self.conn = hub.service.connect(peer)
        self.pending_request = getattr(self.conn, "pending_request", None)
        self.mirrors = getattr(self.conn, "mirrors", False)
        self.run(self.conn.start())

    def data_received(self, data: bytes) -> None:
        self.active = True
        if self.busy:
            if self.held_input is not None:  # a Wait runs: the service sees this once it is over
                self.held_input.append(data)
                return
        elif self.mirrors:  # the answer is the chunk itself (Connection.mirrors)
            self.transport.write(data)
            return
        actions = self.conn.receive(data)
        if not actions:
            if self.pending_request is not None and self.pending_request() and not self.request_began:
                self.request_began = self.hub.loop.time()
            return
        if self.request_began:
            self.request_began = 0.0
        if not self.busy:  # the hot path: one reply (bytes, or a single Send), nothing queued
            if type(actions) is bytes:
                self.transport.write(actions)
                return
            if len(actions) == 1 and type(actions[0]) is Send:
                self.transport.write(actions[0].data)
                return
        self.run(actions)

    def eof_received(self) -> bool:
        self.active = True
        if self.held_input is not None:
            self.held_input.append(b"")
            return True
        self.run(self.conn.receive(b""))
        return True  # keep our side open until the service's Close has flushed

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.hub.drivers.discard(self)
        self._release()
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def pause_writing(self) -> None:
        self.paused_writing = True
        self._set_reading(False)

    def resume_writing(self) -> None:
        self.paused_writing = False
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)
        self._set_reading(True)

    # -- actions ---------------------------------------------------------------------------------
    def run(self, actions: Reply) -> None:
        actions = as_actions(actions)
        if self.busy:
            self.pending.extend(actions)
            if len(self.pending) > 256:
                self._set_reading(False)  # the client is far ahead of us: let TCP push back
            return
        queue = deque(actions)
        while queue and not self.closed:
            action = queue.popleft()
            kind = type(action)
            if kind is Send:
                self.transport.write(action.data)
            elif kind is Wait:
                self._hold(queue)
                self.held_input = []
                self._set_reading(False)
                self.hub.loop.call_later(action.seconds, self._wait_over, action.then)
                return
            elif kind is SendFile:
                self._hold(queue)
                self.hub.loop.create_task(self._send_file(action))
                return
            elif kind is Close:
                self._close_gracefully()
                return

    def _hold(self, rest: deque) -> None:
        self.busy = True
        rest.extend(self.pending)
        self.pending = rest

    def _resume(self) -> None:
        self.busy = False
        if self.closed:
            return
        actions, self.pending = list(self.pending), deque()
        self._set_reading(True)
        self.run(actions)
        if not self.busy and not self.hub.accepting:
            self._close_gracefully()  # stopping: the request in flight is answered

    def _wait_over(self, then) -> None:
        """The Wait has run its time: its continuation's reply, the queued actions, then the input
        that came meanwhile (dropped if the server is stopping, as the other models never read it)."""
        held, self.held_input = self.held_input, None
        if self.closed:
            return
        if then is not None:
            try:
                reply = then()
            except Exception as exc:  # a service bug must cost one connection, not the server
                self.hub.log.error(f"service failed: {exc!r}")
                self.transport.abort()
                return
            self.pending.extendleft(reversed(as_actions(reply)))
        self._resume()
        for data in held or ():
            if self.closed or self.transport.is_closing():
                break
            if data:
                self.data_received(data)
            else:
                self.eof_received()

    async def _send_file(self, action: SendFile) -> None:
        try:
            if action.count:
                await self._transmit(action)
        except (OSError, RuntimeError, asyncio.CancelledError):
            if self.transport is not None:
                self.transport.abort()
        finally:
            action.file.close()
        self._resume()

    async def _transmit(self, action: SendFile) -> None:
        loop = self.hub.loop
        if self.hub.zero_copy:
            try:
                sent = await loop.sendfile(self.transport, action.file, action.offset, action.count, fallback=False)
                if sent != action.count:
                    raise ConnectionError("file shrank while being sent")
                return
            except (NotImplementedError, AttributeError, asyncio.SendfileNotAvailableError):
                self.hub.zero_copy = False
        if self.hub.raw_sendfile:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                await self._sendfile_on_socket(sock.fileno(), action)
                return
        fd = action.file.fileno()
        offset, remaining = action.offset, action.count
        while remaining and not self.closed:
            chunk = os.pread(fd, min(FILE_CHUNK, remaining), offset)
            if not chunk:
                raise ConnectionError("file shrank while being sent")
            self.transport.write(chunk)
            offset += len(chunk)
            remaining -= len(chunk)
            if self.paused_writing:
                self.drain = loop.create_future()
                await self.drain

    async def _sendfile_on_socket(self, fd: int, action: SendFile) -> None:
        """Zero-copy on a loop without ``sendfile`` (uvloop): os.sendfile on the transport's socket.

        The transport's own buffer (the answer's header line) must reach the socket first, or the
        body would overtake it; while the file goes out nothing else is written, because the
        driver holds later actions until this one is done.
        """
        await self._flush_transport()
        loop = self.hub.loop
        in_fd = action.file.fileno()
        offset, remaining = action.offset, action.count
        watch = -1  # a dup of the socket's descriptor, watched for writability
        try:
            while remaining and not self.closed:
                try:
                    sent = os.sendfile(fd, in_fd, offset, min(remaining, SENDFILE_SLICE))
                except BlockingIOError:
                    sent = -1
                if sent == 0:
                    raise ConnectionError("file shrank while being sent")
                if sent > 0:
                    offset += sent
                    remaining -= sent
                    if not remaining:
                        break
                if watch < 0:
                    watch = os.dup(fd)
                # Wait until the socket takes more (or, after a full slice, just let others run).
                self.drain = loop.create_future()
                loop.add_writer(watch, _settle, self.drain)
                try:
                    await self.drain
                finally:
                    loop.remove_writer(watch)
        finally:
            if watch >= 0:
                os.close(watch)

    async def _flush_transport(self) -> None:
        """Wait until the transport has handed every buffered byte to the kernel."""
        transport = self.transport
        if not transport.get_write_buffer_size():
            return
        # With a high-water mark of 0 the transport pauses us at once and resumes us (our
        # resume_writing settles self.drain) exactly when its buffer is empty.
        transport.set_write_buffer_limits(high=0, low=0)
        try:
            for _ in range(1000):  # bounded: each turn waits for a resume_writing or the close
                if self.closed or not transport.get_write_buffer_size():
                    return
                self.drain = self.hub.loop.create_future()
                if not self.paused_writing:
                    self.drain.set_result(None)
                    await asyncio.sleep(0.001)
                    continue
                await self.drain
            if not self.closed and transport.get_write_buffer_size():
                # Sending now would put the body ahead of bytes still buffered: end this client.
                raise ConnectionError("the transport's buffer did not drain before a file send")
        finally:
            if not self.closed:
                transport.set_write_buffer_limits(high=HIGH_WATER)

    def _close_gracefully(self) -> None:
        self.pending.clear()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()
        transport.close()  # flushes what is buffered first

    def _set_reading(self, on: bool) -> None:
        if on == self.reading or self.closed:
            return
        if on and (self.paused_writing or len(self.pending) > 256):
            return
        self.reading = on
        with contextlib.suppress(RuntimeError):
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _release(self) -> None:
        for action in self.pending:
            if type(action) is SendFile:
                action.file.close()
        self.pending.clear()
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()

    @property
    def idle(self) -> bool:
        return not self.busy and (self.transport is None or self.transport.get_write_buffer_size() == 0)


class Hub:
    """What all drivers of one event loop share: the service, limits and live connections."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.service = server.service
        self.limits = server.limits
        self.log = server.log
        self.loop = loop
        self.drivers: set[Driver] = set()
        self.accepting = True
        # TLS encrypts in user space: there is nothing to send zero-copy.
        self.zero_copy = (hasattr(loop, "sendfile") and "uvloop" not in type(loop).__module__
                          and server.limits.tls is None)
        #: No loop.sendfile (uvloop) and no TLS: the driver calls os.sendfile itself.
        self.raw_sendfile = not self.zero_copy and server.limits.tls is None and hasattr(os, "sendfile")

    def sweep(self, period: float) -> None:
        """Close connections silent for the idle timeout: an attribute store per message, not a timer."""
        ticks = max(1, round(self.limits.idle_timeout / period))
        too_old = self.loop.time() - self.limits.request_timeout
        for driver in list(self.drivers):
            if driver.request_began and driver.request_began < too_old and driver.transport is not None:
                driver.transport.abort()  # trickling a request: the deadline is absolute
            elif driver.active or driver.busy:
                driver.active, driver.quiet_ticks = False, 0
            else:
                driver.quiet_ticks += 1
                if driver.quiet_ticks >= ticks and driver.transport is not None:
                    driver.transport.abort()


async def serve_async(server: Server) -> None:
    loop = asyncio.get_running_loop()
    hub = Hub(server, loop)
    stopped = asyncio.Event()
    signals = {"count": 0}

    def on_signal() -> None:
        signals["count"] += 1
        stopped.set()
        if signals["count"] > 1:
            for driver in list(hub.drivers):
                if driver.transport is not None:
                    driver.transport.abort()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    loop.set_exception_handler(_quiet_accept_errors(server))
    for _ in range(server.stop.requested):
        on_signal()  # a signal that came while the loop was starting must not be lost
    servers = []
    for listener in server.listeners:
        listener.setblocking(False)
        servers.append(await loop.create_server(lambda: Driver(hub), sock=listener, backlog=BACKLOG,
                                                ssl=server.limits.tls,
                                                ssl_handshake_timeout=server.limits.request_timeout
                                                if server.limits.tls else None))
    period = min(1.0, max(0.05, min(server.limits.idle_timeout, server.limits.request_timeout) / 4))

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(period)
            hub.sweep(period)

    sweeping = loop.create_task(sweeper())
    await stopped.wait()
    hub.accepting = False
    for srv in servers:
        srv.close()
    for driver in list(hub.drivers):
        if driver.idle:
            driver._close_gracefully()
    deadline = loop.time() + server.limits.drain_seconds
    while any(not _settled(driver) for driver in hub.drivers) and loop.time() < deadline and signals["count"] < 2:
        await asyncio.sleep(0.02)
    for driver in list(hub.drivers):
        if driver.transport is not None:
            driver.transport.abort()
    sweeping.cancel()
    await asyncio.sleep(0)


def _settled(driver: Driver) -> bool:
    """Nothing left for a stop to wait for: closing, with every byte handed to the kernel. What may
    remain is TLS's close_notify exchange, and a peer that never answers it (one that is not
    reading) must not hold the stop until the drain deadline."""
    transport = driver.transport
    return transport is None or (transport.is_closing() and transport.get_write_buffer_size() == 0)


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _quiet_accept_errors(server: Server):
    """Out of descriptors, asyncio's accept loop retries up to the backlog size and logs a traceback
    each time (thousands of lines a second); log one line a second instead, like the other models."""
    throttle = AcceptThrottle(server.log)

    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and "accept" in context.get("message", ""):
            throttle.failed(exc)
            return
        loop.default_exception_handler(context)

    return handle


def serve(server: Server, *, loop: str = "asyncio") -> None:
    """Serve on asyncio's own loop (``loop="asyncio"``) or uvloop's (``"uvloop"``; asyncio's, with a
    log line, where uvloop is not installed)."""
    if loop == "uvloop" and not uvloop_installed():
        server.log.error("uvloop is not installed; running on asyncio's own loop")
        loop = "asyncio"
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_async(server))
    else:
        with asyncio.Runner() as runner:
            runner.run(serve_async(server))
