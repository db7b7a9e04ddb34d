"""The asyncio (and uvloop) adapter: a Protocol per connection driving its engine, no streams.

What each connection does is its engine's (models/engine.py); this file moves bytes and time.
Protocols, not ``asyncio.streams``: the hot path is ``data_received -> received -> write`` with no
coroutine, future or extra buffer per message, which is what keeps this model within a few per cent
of a bare Protocol echo. A ``Wait``'s end and the linger are ``call_at``; the idle and request
deadlines are one sweep a period over every connection (an attribute store per message, not a timer).
The transport's buffer is the engine's ``backlog``: its high-water mark pauses reading
(``pause_writing``), and a buffer that stops shrinking is a client that stopped reading.

Files go out zero-copy with ``os.sendfile`` on the transport's socket, once the transport's own
buffer is empty, waiting for writability on a ``dup`` of its descriptor (the loop refuses watchers on
a descriptor a transport owns); uvloop has no ``loop.sendfile`` (uvloop#228), and one path for both
loops reports progress as it goes. Under TLS the bytes are encrypted in user space: chunked reads
written under flow control.

TLS listeners are not ``create_server(ssl=...)``: that makes the protocol only once a handshake is
over, so connections still in one counted against nothing (2,000 silent ones held 2,000 descriptors
past ``--max-connections 16``). Their accept loop is ours (``TlsAcceptor``): each connection is
counted at accept, then handshaken (``connect_accepted_socket``) within the request deadline. One
past the limit is refused as the blocking models refuse it (accept.py's ``Refuser``): the busy line
inside TLS for ``TLS_REFUSERS`` at a time, each refusal over (closed, by an abort if need be) within
``REFUSE_SECONDS`` + ``LINGER_SECONDS`` of its accept; past them the line in plain text, at once.
With a preface (``--proxy-protocol``) the listener is a plain one: the header comes in clear, and
the Link starts TLS on its transport once it is whole (``_secure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from asyncio import sslproto

from sockkit.catalog import uvloop_installed
from sockkit.lifecycle import peer_of
from sockkit.models.accept import REFUSE_SECONDS, TLS_REFUSERS, AcceptThrottle, refuse
from sockkit.models.engine import CLOSED, HIGH_WATER, LINGER_SECONDS, LINGERING, OPEN, Engine, open_engine, sweep_period
from sockkit.models.settings import Server
from sockkit.net import BACKLOG

#: Chunk read from disk per write when the bytes must be encrypted (TLS).
FILE_CHUNK = 1 << 20
#: Most bytes one os.sendfile call may send before the driver yields to the loop: a reader as
#: fast as loopback never makes the socket block, so without a bound one transfer would starve
#: every other connection. 4 MiB is the largest socket send buffer here (net.ipv4.tcp_wmem).
SENDFILE_SLICE = 4 << 20
#: Clients a TLS listener accepts per wake-up, so a connect storm cannot starve the others.
ACCEPTS_PER_WAKE = 64


class Link(asyncio.Protocol):
    """One connection: its transport and its engine."""

    __slots__ = ("again", "counted", "drain", "engine", "handshake", "hub", "reading", "securing", "sending", "syncing",
                 "timer", "timer_at", "transport")

    def __init__(self, hub: Hub, counted: bool = False) -> None:
        self.hub = hub
        #: Counted in ``hub.links`` already, at accept (TLS: before its handshake) ...
        self.counted = counted
        #: ... and the task doing that handshake (until it is done, ``engine`` is None).
        self.handshake: asyncio.Task | None = None
        self.transport: asyncio.Transport | None = None
        self.engine: Engine | None = None
        self.reading = True
        self.sending = False  # a file is going out (a task)
        self.drain: asyncio.Future | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        #: ``_sync`` is running (a transport may call back into us from ``write``): a nested call only
        #: asks the running one to go round again.
        self.syncing = False
        self.again = False
        #: The TLS handshake after a preface is under way (``_secure``).
        self.securing = False

    # -- transport callbacks ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        hub = self.hub
        transport.set_write_buffer_limits(high=HIGH_WATER)
        if not self.counted and len(hub.links) >= hub.server.limits.max_connections:
            reply = hub.server.service.busy_reply()
            if reply:
                transport.write(reply)
            transport.close()
            return
        hub.links.add(self)
        self.engine = open_engine(hub.server, peer_of(transport.get_extra_info("peername")), hub.loop.time)
        if not hub.accepting:
            # Accepted before the stop, made only now (asyncio makes a transport a loop turn or a TLS
            # handshake after its accept): it has not spoken, so the stop gives it its grace (rule 6).
            self.engine.stop()
        self._sync()

    # -- a preface before TLS (rule 7) -------------------------------------------------------------
    def _secure(self) -> None:
        """The preface came in clear and is whole: TLS from here on the same transport. What the
        transport read past the preface (``tls_rest``: the client's hello, often in the same segment)
        goes into the TLS protocol before anything else -- what ``loop.start_tls`` cannot do, so this
        is start_tls's own sequence, with asyncio's SSLProtocol, under both loops."""
        hub, plain, engine = self.hub, self.transport, self.engine
        limits = hub.server.limits
        self.securing = True
        plain.pause_reading()
        self.reading = False
        waiter = hub.loop.create_future()
        tls = sslproto.SSLProtocol(hub.loop, self, limits.tls, waiter, server_side=True, call_connection_made=False,
                                   ssl_handshake_timeout=limits.request_timeout)
        plain.set_protocol(tls)
        tls.connection_made(plain)
        rest = memoryview(engine.tls_rest)
        while rest:
            buffer = tls.get_buffer(len(rest))
            count = min(len(buffer), len(rest))
            buffer[:count] = rest[:count]
            tls.buffer_updated(count)
            rest = rest[count:]
        plain.resume_reading()
        hub.loop.create_task(self._secured(waiter, tls, plain))

    async def _secured(self, waiter: asyncio.Future, tls: sslproto.SSLProtocol, plain) -> None:
        try:
            await waiter
        except (OSError, RuntimeError):  # a failed or late handshake (ssl.SSLError, TimeoutError), a reset
            plain.abort()
            self.connection_lost(None)  # (SSLProtocol tells the app only of a connection it made)
            return
        if self.engine.state is not OPEN:
            plain.abort()
            self.connection_lost(None)
            return
        # (Bytes that came with the handshake's last flight reached data_received already: the engine
        # kept them, and gives them to the service once it starts.)
        secured = tls._app_transport  # what loop.start_tls returns
        self.transport = secured
        secured.set_write_buffer_limits(high=HIGH_WATER)
        self.reading = True
        self.engine.secured()
        self._sync()

    def data_received(self, data: bytes) -> None:
        engine = self.engine
        if engine.mirroring:  # the answer is the chunk itself (Connection.mirrors)
            engine.progressed = True
            self.transport.write(data)
            return
        reply = engine.received(data)
        if reply:
            self.transport.write(reply)
            return
        if engine.wants_handshake and not self.securing:
            self._secure()
            return
        self._sync()

    def eof_received(self) -> bool:
        if self.engine is None:  # refused: closing already
            return False
        self.engine.received(b"")
        self._sync()
        # Keep our side open until the engine has flushed and lingered -- where there is a side to keep:
        # TLS cannot half-close (and asyncio's SSLProtocol warns of a True it must ignore).
        return self.transport.can_write_eof()

    def connection_lost(self, exc) -> None:
        self.hub.links.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.engine is not None:
            self.engine.reset()
            self.engine.release()
        _settle(self.drain)

    def pause_writing(self) -> None:
        if self.engine is not None:
            self.engine.pause(True)
            self._set_reading(False)

    def resume_writing(self) -> None:
        _settle(self.drain)
        if self.engine is not None:
            self.engine.pause(False)
            self._sync()

    # -- carrying out the engine's wants ---------------------------------------------------------
    def _sync(self) -> None:
        if self.syncing:
            self.again = True
            return
        self.syncing = True
        try:
            self.again = True
            while self.again:
                self.again = False
                self._carry_out()
        finally:
            self.syncing = False

    def _carry_out(self) -> None:
        engine, transport = self.engine, self.transport
        while True:
            out = engine.out
            if out:
                engine.sent(len(out))  # first: the transport takes it all, and may call us back
                transport.write(out)
            elif engine.file is not None:
                if not self.sending:
                    self.sending = True
                    self.hub.loop.create_task(self._send_file())
                break
            elif engine.wants_shutdown:
                half = transport.can_write_eof()  # not under TLS: there, closing sends close_notify
                if half:
                    with contextlib.suppress(OSError, RuntimeError):
                        transport.write_eof()
                engine.shut(half)
            else:
                break
        if engine.state is CLOSED:
            if engine.aborted:
                transport.abort()
            elif not transport.is_closing():  # (a TLS transport closed twice loses its state)
                transport.close()  # what is still buffered goes first
            return
        deadline = engine.deadline
        if deadline != self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.hub.loop.call_at(deadline, self._on_timer) if deadline else None
            self.timer_at = deadline
        if not engine.awaiting_tls:  # (until the TLS after a preface is up, _secure decides)
            self._set_reading(engine.wants_read)

    def _on_timer(self) -> None:
        self.timer, self.timer_at = None, 0.0
        self.engine.timer(self.hub.loop.time())
        self._sync()

    def _set_reading(self, on: bool) -> None:
        if on == self.reading or self.transport.is_closing():
            return
        self.reading = on
        with contextlib.suppress(RuntimeError):
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def sweep(self, now: float) -> None:
        transport = self.transport
        if self.engine.sweep(now, transport.get_write_buffer_size()):
            if self.engine.state is CLOSED and self.engine.aborted:
                transport.abort()
            elif not transport.is_closing():
                self._sync()

    @property
    def settled(self) -> bool:
        """Nothing left for a stop to wait for: our FIN is out (or the transport closing) with every
        byte handed to the kernel. What may remain is the linger or TLS's close_notify exchange, and
        a peer that never answers must not hold the stop until the drain deadline."""
        engine = self.engine
        if engine is None:
            return True  # still in its TLS handshake: nothing of ours to finish (the cut ends it)
        return (engine.state is LINGERING or engine.state is CLOSED) and not self.transport.get_write_buffer_size()

    # -- files -----------------------------------------------------------------------------------
    async def _send_file(self) -> None:
        engine = self.engine
        try:
            if self.hub.raw_sendfile:
                await self._sendfile_on_socket()
            else:
                await self._write_file_chunks()
        except OSError as exc:
            engine.file_failed(exc)  # logged if it is the file's (EIO), silent if the socket's
        except (RuntimeError, asyncio.CancelledError):
            engine.reset()
        finally:
            self.sending = False
        self._sync()

    async def _write_file_chunks(self) -> None:
        engine, transport = self.engine, self.transport
        fd = engine.file.file.fileno()
        while engine.file is not None and not transport.is_closing():
            chunk = os.pread(fd, min(FILE_CHUNK, engine.file_left), engine.file_offset)
            if not chunk:
                raise ConnectionError("file shrank while being sent")
            transport.write(chunk)
            engine.file_sent(len(chunk))
            if transport.get_write_buffer_size() > HIGH_WATER:
                await self._writable()

    async def _sendfile_on_socket(self) -> None:
        """os.sendfile on the transport's socket. The transport's own buffer (the answer's header
        line) must reach the socket first, or the body would overtake it; while the file goes out
        nothing else is written, because the engine holds what follows until it is done."""
        await self._flush_transport()
        engine = self.engine
        fd = self.transport.get_extra_info("socket").fileno()
        loop = self.hub.loop
        watch = -1  # a dup of the socket's descriptor, watched for writability
        try:
            while engine.file is not None and not self.transport.is_closing():
                try:
                    sent = os.sendfile(fd, engine.file.file.fileno(), engine.file_offset,
                                       min(engine.file_left, SENDFILE_SLICE))
                except BlockingIOError:
                    sent = -1
                if sent == 0:
                    raise ConnectionError("file shrank while being sent")
                if sent > 0:
                    engine.file_sent(sent)
                    if engine.file is None:
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

    async def _writable(self) -> None:
        """Until the transport's buffer is below its high-water mark again (resume_writing)."""
        self.drain = self.hub.loop.create_future()
        if self.transport.get_write_buffer_size() <= HIGH_WATER:
            _settle(self.drain)
        await self.drain

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
                if transport.is_closing() or not transport.get_write_buffer_size():
                    return
                if self.engine.paused:
                    self.drain = self.hub.loop.create_future()
                    await self.drain
                else:
                    await asyncio.sleep(0.001)
            if not transport.is_closing() and transport.get_write_buffer_size():
                # Sending now would put the body ahead of bytes still buffered: end this client.
                raise ConnectionError("the transport's buffer did not drain before a file send")
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits(high=HIGH_WATER)


class _Busy(asyncio.Protocol):
    """A refused TLS client: the busy line, then close_notify; ``gone`` once the connection is."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.gone = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        if self.reply:
            transport.write(self.reply)
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass  # a request sent after the hello: dropped, as the blocking models' linger drops it

    def connection_lost(self, exc) -> None:
        _settle(self.gone)


class TlsAcceptor:
    """The accept loop of a TLS listener: every connection counts against ``--max-connections`` from
    accept, and its handshake must end within the request deadline (asyncio's own ``ssl=`` server
    would count it only after)."""

    def __init__(self, hub: Hub, listener: socket.socket) -> None:
        self.hub = hub
        self.listener = listener
        self.throttle = AcceptThrottle(hub.server.log)
        self.muted = False
        self.refusing = 0  # busy lines going out inside TLS sessions
        hub.loop.add_reader(listener.fileno(), self.accept)

    def accept(self) -> None:
        hub = self.hub
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, _address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                pause = self.throttle.failed(exc)
                if pause:  # out of descriptors: stop watching briefly instead of spinning
                    self.close()
                    self.muted = True
                    hub.loop.call_later(pause, self._unmute)
                return
            if len(hub.links) >= hub.server.limits.max_connections:
                self.refuse(sock)
                continue
            link = Link(hub, counted=True)
            hub.links.add(link)
            link.handshake = hub.loop.create_task(self._handshake(link, sock))

    async def _handshake(self, link: Link, sock: socket.socket) -> None:
        hub = self.hub
        try:
            await hub.loop.connect_accepted_socket(lambda: link, sock, ssl=hub.server.limits.tls,
                                                   ssl_handshake_timeout=hub.server.limits.request_timeout)
        except Exception:  # a timeout, a bad hello, a reset: this client only, without a word
            hub.links.discard(link)
            sock.close()
        except asyncio.CancelledError:
            hub.links.discard(link)
            sock.close()
            raise

    def refuse(self, sock: socket.socket) -> None:
        """Past the limit: the busy line inside a TLS session, as the thread models say it (at most
        TLS_REFUSERS at once, each within REFUSE_SECONDS); past them in plain text, at once."""
        reply = self.hub.server.service.busy_reply()
        if self.refusing >= TLS_REFUSERS:
            refuse(sock, reply)
            return
        self.refusing += 1
        self.hub.loop.create_task(self._refuse_over_tls(sock, reply))

    async def _refuse_over_tls(self, sock: socket.socket, reply: bytes) -> None:
        """The refusal holds its place among the TLS_REFUSERS until its connection is gone: a closed
        TLS transport waits up to 30 s (asyncio's ssl_shutdown_timeout) for the client's close_notify,
        so a client that finished its hello and then went silent held a descriptor that long, and
        300 of them one after another held 300 past --max-connections 1."""
        loop = self.hub.loop
        busy = _Busy(reply)
        transport = None
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: busy, sock, ssl=self.hub.server.limits.tls,
                                                              ssl_handshake_timeout=REFUSE_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(busy.gone), LINGER_SECONDS)
        except Exception:  # a client that cannot finish a handshake in time is refused all the same
            sock.close()
        except asyncio.CancelledError:
            sock.close()
            raise
        finally:
            if transport is not None and not busy.gone.done():
                transport.abort()  # its close_notify did not come: our FIN (or a reset) now
            self.refusing -= 1

    def _unmute(self) -> None:
        if self.muted and self.listener.fileno() >= 0:
            self.muted = False
            self.hub.loop.add_reader(self.listener.fileno(), self.accept)

    def close(self) -> None:
        if self.listener.fileno() >= 0:
            self.hub.loop.remove_reader(self.listener.fileno())

    def stop(self) -> None:
        self.close()
        self.listener.close()


class Hub:
    """What all links of one event loop share: the server, the loop and the live connections."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.links: set[Link] = set()
        self.accepting = True
        #: Zero-copy files: not under TLS, which encrypts in user space.
        self.raw_sendfile = server.limits.tls is None and hasattr(os, "sendfile")

    def sweep(self) -> None:
        now = self.loop.time()
        for link in list(self.links):
            if link.engine is not None:  # (a TLS handshake has its own deadline)
                link.sweep(now)

    def stop(self) -> None:
        self.accepting = False
        for link in list(self.links):
            if link.engine is None:
                continue  # in its TLS handshake: it has said nothing yet
            link.engine.stop()
            if not link.transport.is_closing():
                link._sync()

    def cut(self) -> None:
        for link in list(self.links):
            if link.engine is None:
                if link.handshake is not None:
                    link.handshake.cancel()
            else:
                link.transport.abort()


async def serve_async(server: Server) -> None:
    loop = asyncio.get_running_loop()
    hub = Hub(server, loop)
    stopped = asyncio.Event()
    signals = {"count": 0}

    def on_signal() -> None:
        signals["count"] += 1
        stopped.set()
        if signals["count"] > 1:
            hub.cut()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    loop.set_exception_handler(_quiet_accept_errors(server))
    for _ in range(server.stop.requested):
        on_signal()  # a signal that came while the loop was starting must not be lost
    limits = server.limits
    servers: list = []
    for listener in server.listeners:
        listener.setblocking(False)
        if limits.tls is not None and server.preface is None:
            listener.listen(BACKLOG)
            servers.append(TlsAcceptor(hub, listener))
        else:
            # (With a preface under TLS the preface comes in clear: accepted plain, counted at accept
            # like any plain connection, and the Link starts TLS once it is whole: _secure.)
            servers.append(await loop.create_server(lambda: Link(hub), sock=listener, backlog=BACKLOG))
    period = sweep_period(limits)

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(period)
            hub.sweep()

    sweeping = loop.create_task(sweeper())
    await stopped.wait()
    for srv in servers:
        if isinstance(srv, TlsAcceptor):
            srv.stop()
        else:
            srv.close()
    hub.stop()
    deadline = loop.time() + limits.drain_seconds
    while any(not link.settled for link in hub.links) and loop.time() < deadline and signals["count"] < 2:
        await asyncio.sleep(0.02)
    hub.cut()
    sweeping.cancel()
    await asyncio.sleep(0)


def _settle(future: asyncio.Future | None) -> None:
    if future is not None and not future.done():
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
