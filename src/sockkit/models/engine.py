"""The connection engine: what one connection does, written once for every model, with no sockets.

A model is an adapter that moves bytes and time; this engine decides everything else, as h11 does
for HTTP: events in, wants out.

Events in (the adapter calls them as things happen):
  ``received(data)`` bytes read (``b""``: the peer's FIN) -- returns bytes to send at once in the
  common case; ``sent(n)`` / ``keep(rest)`` / ``file_sent(n)`` progress of what it asked for;
  ``shut(half_closed)`` our FIN is out (or cannot be); ``pause(on)`` the adapter's own buffer is
  full; ``timer(now)`` a deadline it asked for came; ``sweep(now, backlog)`` the periodic check;
  ``stop()`` the server is stopping; ``reset()`` the socket failed; ``release()`` the end.

Wants out (the adapter reads them after an event):
  ``out`` bytes to send; ``file`` + ``file_offset``/``file_left`` a file range to send once ``out``
  is empty; ``wants_shutdown`` send our FIN now; ``wants_read``; ``deadline`` when to call
  ``timer`` (0: never); ``state`` -- at ``CLOSED`` the adapter closes the socket (``aborted``: at
  once, whatever is unsent); ``mirroring`` the adapter may echo each chunk itself (below).

Rules kept here, each in one place:
1. Actions run in order. A ``Send``'s bytes leave before anything after it; a ``Wait`` or a
   ``SendFile`` starts once every earlier byte has left (and the adapter's own buffer is below its
   high-water mark); when a ``Wait`` is over, its ``then``'s reply goes ahead of what was queued
   behind it -- so ``Wait(0, then)`` is "make the next answer once this one is out", how a service
   answers pipelined requests one at a time; a ``Close`` flushes what came before it, then our
   FIN, then the linger; what comes after a ``Close`` is dropped (its files closed).
2. Input reaches the service only when its previous answer is done: while an answer waits out a
   ``Wait``, sends a file, or has more than ``HIGH_WATER`` bytes unsent (or the adapter's own buffer
   is full), ``wants_read`` is False and anything that still arrives is kept, in order, for later.
   So a stamp in a reply delayed by a ``Wait`` is taken when the wait is over (``actions.Wait``'s
   rule), a client that never reads costs at most one answer, and the queue holds at most one
   answer's actions. Input held back is dropped if the server is stopping (the blocking models
   never read it).
3. One error boundary: an exception from the service (``connect``, ``start``, ``receive``,
   ``pending_request``, ``close``, or an answer that is not actions) is logged once, naming the
   client, and ends this connection only, at once. A reset or timeout ends it silently.
4. Deadlines: *idle* -- no progress in either direction (nothing read, nothing sent, no adapter
   buffer shrinking) for ``idle_timeout``; a ``Wait`` is never idle. *Request* -- once part of a
   request has come (``pending_request()``), the rest must come within ``request_timeout`` of its
   first byte. *Linger* -- after our FIN, the peer's input is read and dropped for at most
   ``LINGER_SECONDS`` and ``LINGER_BYTES``, so our reply is not destroyed by a reset.
   The *first* request is due within ``request_timeout`` of accept (nginx's client_header_timeout):
   a connection that sends nothing is closed then, not after the idle timeout -- unless the
   service spoke first (``start`` answered: a banner, a prompt), whose client may be a person who
   reads and thinks; the idle timeout governs that one, and every wait between later requests.
   *Minimum rate* -- while a file is being sent, the client must take at least
   ``min_rate * rate_window`` bytes in every ``rate_window`` seconds (counted by ``sweep``, from
   ``file_sent`` and the adapter's backlog), or it is cut and logged: a reader too slow to be any
   real link must not hold a transfer (its slot, its descriptor) for ever by reading a little
   before each idle timeout. The fast paths carry no file, so they pay nothing for it.
5. Fast paths (measured; see docs/benchmarks.md): a ``receive`` answered with bare ``bytes`` while
   nothing else is pending is handed back from ``received`` with no list, no ``Send`` and no clock
   read; a connection whose answers are its input (``mirrors``) is not called at all while
   ``mirroring`` is True -- the adapter echoes each chunk itself and only notes the progress
   (``engine.progressed = True``).
6. A stop ends a connection between requests as if the peer had closed (the service says its
   goodbye); one in the middle of an answer finishes that answer first. One that has not spoken
   yet (no byte has reached its service: it was accepted an instant before the stop, its request,
   or its preface, may be on the way) is not between requests: it gets ``STOP_GRACE_SECONDS`` (at
   most to its request deadline) to speak, is served, and only then says goodbye.
7. Before the service starts, an optional *preface* (e.g. a PROXY protocol header) consumes the
   first bytes and names the real peer; the log line, the service's ``connect`` and the request
   deadline (counted from accept) all wait for it. ``Server.preface`` makes one per connection from
   the accepted TCP peer (a ValueError refuses that peer before a byte is read). A connection that
   is refused, or ends without a whole preface (its close, a reset, the request deadline, the
   server stopping), is closed and logged (``Log.refused``: at most a line a second). Under TLS
   the preface comes in clear before the handshake (HAProxy's ``send-proxy-v2`` + ``ssl``): once it
   is whole the engine waits (``awaiting_tls``; ``tls_rest`` the bytes read past it, the start of
   the handshake) until the adapter has done the handshake and calls ``secured()``.
"""

from __future__ import annotations

import enum
import errno
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from sockkit.services.actions import CLOSE, Close, Peer, Preface, Send, SendFile, Wait

if TYPE_CHECKING:
    from sockkit.lifecycle import Log
    from sockkit.models.settings import Limits, Server
    from sockkit.services.actions import Connection, Reply, Service

#: Unsent bytes per connection before its input is held back (Twisted/asyncio/uvicorn: 64 KiB).
HIGH_WATER = 64 * 1024
#: After our FIN, how long we keep reading (and dropping) before closing, so unread client data
#: does not turn our close into a RST that destroys the reply in flight...
LINGER_SECONDS = 1.0
#: ... and how much of it we are willing to read.
LINGER_BYTES = 1 << 20
#: Errors of a file send that are the socket's (the client went away or stopped reading): silent.
#: Any other (EIO from a failing disk, ...) is the file's, and logged.
SOCKET_ERRNOS = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ESHUTDOWN,
                           errno.ETIMEDOUT, errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH})
#: How long a stop waits for a connection that has not spoken yet (rule 6): its request was sent an
#: instant after our accept (through a balancer, header and request follow the connect at once).
STOP_GRACE_SECONDS = 1.0


class State(enum.Enum):
    #: Conversing: input goes to the service, its answers go out.
    OPEN = "open"
    #: A ``Close`` (or the peer's FIN) was reached: what is queued goes out, then our FIN.
    CLOSING = "closing"
    #: Our FIN is out: the peer's input is read and dropped (bounded), then we close.
    LINGERING = "lingering"
    #: Over: the adapter closes the socket.
    CLOSED = "closed"


OPEN, CLOSING, LINGERING, CLOSED = State.OPEN, State.CLOSING, State.LINGERING, State.CLOSED


def client_name(peer: Peer) -> str:
    """The client as the chapter's log line names it: ``('127.0.0.1', 41234)`` (control characters
    in a hostile name escaped)."""
    host = repr(peer.host)
    if not host.isprintable():
        host = host.encode("unicode_escape").decode("ascii")
    return f"({host}, {peer.port})"


def open_engine(server: Server, peer: Peer, clock: Callable[[], float]) -> Engine:
    """The engine of a client just accepted by ``server`` (with the server's preface stage, if any:
    made from the TCP peer, which it may refuse -- then the engine is closed, the refusal logged)."""
    make = server.preface
    if make is None:
        return Engine(server.service, peer, server.log, server.limits, clock)
    try:
        preface = make(peer)
    except ValueError as exc:
        engine = Engine(server.service, peer, server.log, server.limits, clock, preface=_REFUSED)
        engine._preface_failed(str(exc))
        return engine
    return Engine(server.service, peer, server.log, server.limits, clock, preface=preface,
                  tls_after_preface=server.limits.tls is not None)


class _Refused:
    """The preface of a peer refused at accept: it never reads a byte."""

    name = "preface"

    def feed(self, data: bytes) -> None:
        raise ValueError("refused")


_REFUSED = _Refused()


def sweep_period(limits: Limits | Engine) -> float:
    """How often an adapter calls ``sweep`` (the event loops always, the blocking models during a
    file transfer): a quarter of the shortest deadline -- idle, request, and the minimum-rate window
    when there is a minimum -- between 0.05 s and 1 s (each is honoured to within that)."""
    shortest = min(limits.idle_timeout, limits.request_timeout)
    if limits.min_rate:
        shortest = min(shortest, limits.rate_window)
    return min(1.0, max(0.05, shortest / 4))


class Engine:
    """One connection's conduct (see the module's rules). Not thread-safe: one adapter drives it."""

    __slots__ = (
        "aborted",
        "awaiting_tls",
        "backlog",
        "clock",
        "conn",
        "deadline",
        "eof",
        "eof_pending",
        "file",
        "file_left",
        "file_offset",
        "flooded",
        "grace_until",
        "held_then",
        "held_until",
        "idle_timeout",
        "inbox",
        "last_progress",
        "linger_budget",
        "linger_until",
        "log",
        "min_rate",
        "mirroring",
        "mirrors",
        "out",
        "outbox",
        "paused",
        "peer",
        "pending_request",
        "plain",
        "preface",
        "progressed",
        "rate_window",
        "ready",
        "receive",
        "request_began",
        "request_timeout",
        "service",
        "spoke",
        "state",
        "stopping",
        "tls_rest",
        "window_backlog",
        "window_began",
        "window_moved",
    )

    def __init__(self, service: Service, peer: Peer, log: Log, limits: Limits, clock: Callable[[], float], *,
                 preface: Preface | None = None, tls_after_preface: bool = False) -> None:
        self.service = service
        #: The preface is followed by a TLS handshake the adapter does (rule 7): True until ``secured()``
        #: (``wants_handshake`` once the preface is whole); ``tls_rest``: what was read past the preface.
        self.awaiting_tls = tls_after_preface
        self.tls_rest = b""
        self.peer = peer
        self.log = log
        self.clock = clock
        self.idle_timeout = limits.idle_timeout
        self.request_timeout = limits.request_timeout
        self.min_rate = limits.min_rate
        self.rate_window = limits.rate_window
        #: The minimum-rate window (rule 4): when it began (0: no file going out), the file bytes
        #: sent in it and the adapter's backlog at its start.
        self.window_began = 0.0
        self.window_moved = 0
        self.window_backlog = 0
        self.state = OPEN
        #: Closed at once rather than flushed (a failure, a deadline, a cut).
        self.aborted = False
        self.conn: Connection | None = None
        self.receive: Callable[[bytes], Reply] | None = None
        self.mirrors = False
        self.pending_request: Callable[[], bool] | None = None
        self.preface = preface
        self.out: bytes | bytearray = b""
        self.file: SendFile | None = None
        self.file_offset = 0
        self.file_left = 0
        #: The rest of the answer being carried out (behind a Wait, a file or unsent bytes). Made on
        #: first use, as is ``inbox``: 10,000 idle connections should not cost 10,000 deques.
        self.outbox: deque | tuple = ()
        #: Input that came while the service could not be given it (rule 2), and a FIN behind it.
        self.inbox = b""
        self.eof_pending = False
        #: The peer's FIN has reached the service (or the linger).
        self.eof = False
        self.held_until = 0.0
        #: The running Wait's continuation (``Wait.then``), called when it is over.
        self.held_then: Callable[[], Reply] | None = None
        self.linger_until = 0.0
        self.linger_budget = LINGER_BYTES
        self.flooded = False
        self.deadline = 0.0
        self.paused = False
        self.stopping = False
        #: Bytes have reached the service (rule 6: until then, a stop gives a grace until ``grace_until``).
        self.spoke = False
        self.grace_until = 0.0
        #: Bytes the adapter holds that we handed it (asyncio's transport buffer), as last told.
        self.backlog = 0
        self.progressed = False
        self.last_progress = clock()
        self.ready = self.plain = self.mirroring = False
        # The preface, then the first request, are due within the request deadline of accept (rule 4).
        self.request_began = self.last_progress
        if preface is None:
            self._open(peer)
        self._settle()

    # -- events in -------------------------------------------------------------------------------
    def received(self, data: bytes) -> bytes | None:
        """``data`` was read (``b""``: the peer's FIN). Returns bytes to send now -- the common
        case: nothing else pending and the service answered with bare bytes -- or None, after which
        the adapter looks at the wants."""
        self.progressed = True
        if self.plain:
            try:
                reply = self.receive(data)
            except Exception as exc:  # rule 3
                self._service_failed(exc)
                self._settle()
                return None
            if reply.__class__ is bytes and data:
                return reply
            self._answered(reply, data)
        else:
            self._received_otherwise(data)
        self._settle()
        return None

    def keep(self, rest: bytes | memoryview) -> None:
        """The bytes ``received`` returned went out only in part: ``rest`` is queued (copied)."""
        self.progressed = True
        self.out = bytes(rest) if not self.out else self.out + rest
        self._settle()

    def sent(self, count: int) -> None:
        """The first ``count`` bytes of ``out`` went out."""
        self.progressed = True
        out = self.out
        if count >= len(out):
            self.out = b""
        elif out.__class__ is bytearray:
            del out[:count]
        else:
            self.out = bytearray(memoryview(out)[count:])
        self._settle()

    def file_sent(self, count: int) -> None:
        """``count`` more bytes of the file range went out (the adapter sends from ``file_offset``)."""
        self.progressed = True
        self.window_moved += count
        self.file_offset += count
        self.file_left -= count
        if self.file_left <= 0:
            self._drop_file()
        self._settle()

    def shut(self, half_closed: bool) -> None:
        """Our FIN is out (``half_closed``), or the transport cannot half-close and is closing."""
        if not half_closed or self.eof:
            self._finish()
        else:
            self.state = LINGERING
            self.linger_until = self.clock() + LINGER_SECONDS
        self._settle()

    def pause(self, on: bool) -> None:
        """The adapter's own buffer passed its high-water mark (on) or drained (off)."""
        self.paused = on
        self._settle()

    def timer(self, now: float) -> None:
        """Time passed: a ``Wait`` or the linger may be over (a stale call does nothing)."""
        if self.state is OPEN and self.grace_until and now >= self.grace_until:
            self._grace_over()
        elif self.state is OPEN and self.held_until and now >= self.held_until:
            self.held_until = 0.0
            self.last_progress = now
            then, self.held_then = self.held_then, None
            if then is not None:
                self._continue(then)
        elif self.state is LINGERING and now >= self.linger_until:
            self._linger_over()
        self._settle()

    def sweep(self, now: float, backlog: int = 0) -> bool:
        """The periodic check of the idle and request deadlines (rule 4); ``backlog`` is how many
        bytes the adapter still holds (a shrinking backlog is progress). True if the state changed."""
        before = self.state
        if before is CLOSED and (self.aborted or not backlog):
            return False
        if self.progressed or backlog < self.backlog or self.held_until:
            self.last_progress = now
        self.progressed = False
        self.backlog = backlog
        if before is LINGERING and now >= self.linger_until:
            self._linger_over()
        if self.request_began and now - self.request_began > self.request_timeout:
            if self.preface is not None:
                self._preface_ended(f"no complete header within the request deadline ({self.request_timeout:g} s)")
            self._abort()  # trickling a request (or never finishing a preface): the deadline is absolute
        elif now - self.last_progress > self.idle_timeout:
            self._abort()  # nothing moved either way: a silent client or one that stopped reading
        elif self.file is None or not self.min_rate:
            self.window_began = 0.0
        else:
            self._check_rate(now, backlog)
        if self.state is before and not self.aborted:
            return False
        self._settle()
        return True

    def stop(self) -> None:
        """The server is stopping (rule 6)."""
        if not self.stopping and self.fresh and not self.eof_pending:
            now = self.clock()
            until = now + STOP_GRACE_SECONDS
            if self.request_began:
                until = min(until, self.request_began + self.request_timeout)
            if until > now:
                self.grace_until = until
        self.stopping = True
        if self.preface is not None and self.state is OPEN and not self.grace_until:
            self._grace_over()
        self._settle()

    def reset(self) -> None:
        """The socket failed (reset, timeout, broken pipe): end without a word (but for a connection
        still in its preface, whose end is logged)."""
        if self.preface is not None and self.state is OPEN:
            # (a kernel timeout may fire a little early: within 50 ms of the deadline is the deadline)
            if self.request_began and self.clock() - self.request_began >= self.request_timeout - 0.05:
                self._preface_ended(f"no complete header within the request deadline ({self.request_timeout:g} s)")
            else:
                self._preface_ended("it was reset or timed out before a complete header")
        self._abort()
        self._settle()

    def cut(self) -> None:
        """The drain deadline passed: end now."""
        self.reset()

    def file_failed(self, exc: OSError) -> None:
        """Sending the file range raised ``exc``: the socket's errors end the connection silently, as
        ``reset``; any other is the file's (an EIO from the disk) and is logged once, naming the client
        and the file -- else the client only sees a short body and the server says nothing."""
        file = self.file
        if file is not None and self.state is not CLOSED and exc.errno is not None and exc.errno not in SOCKET_ERRNOS:
            name = file.name or f"descriptor {file.file.fileno()}"
            self.log.error(f"client {client_name(self.peer)}: reading {name!r} failed at byte {self.file_offset}: "
                           f"{exc.strerror or repr(exc)} ({errno.errorcode.get(exc.errno, exc.errno)}); "
                           "this connection is closed, the server goes on")
        self.reset()

    def release(self) -> None:
        """The end: files closed, the service's ``close`` called (once, whatever happened)."""
        if self.state is not CLOSED:
            self._abort()
            self._settle()
        self._drop_queue()
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # rule 3: still this connection's problem only
                self._log_failure("failed in close()", exc)

    # -- wants out -------------------------------------------------------------------------------
    @property
    def wants_read(self) -> bool:
        state = self.state
        if state is OPEN:
            return (self.ready or self.preface is not None) and not self.eof and not (self.awaiting_tls
                                                                                    and self.preface is None)
        if state is CLOSED:
            return False
        return not (self.eof or self.flooded)

    @property
    def wants_handshake(self) -> bool:
        """The preface is whole and TLS comes next: the adapter hands ``tls_rest`` (and the socket's
        unread bytes) to a TLS handshake, then calls ``secured()``."""
        return self.awaiting_tls and self.preface is None and self.state is OPEN

    @property
    def fresh(self) -> bool:
        """Open, and nothing has reached the service yet (a stop gives it a grace: rule 6)."""
        return self.state is OPEN and not self.spoke

    @property
    def wants_shutdown(self) -> bool:
        """Everything before the ``Close`` is out: send our FIN now, then ``shut``."""
        return self.state is CLOSING and not self.out and self.file is None

    @property
    def idle(self) -> bool:
        """Between requests: nothing being answered, nothing half-received."""
        return (self.state is OPEN and self.ready and not self.out and not self.request_began and not self.inbox
                and not self.eof_pending)

    def read_timeout(self, now: float) -> float:
        """For adapters whose deadlines are kernel timeouts: how long the next read or send may block."""
        if self.state is LINGERING:
            return max(0.001, self.linger_until - now)
        seconds = self.idle_timeout
        if self.request_began:
            seconds = min(seconds, self.request_began + self.request_timeout - now)
        if self.grace_until:
            seconds = min(seconds, self.grace_until - now)
        return max(0.001, seconds)

    # -- the rest is internal --------------------------------------------------------------------
    def _open(self, peer: Peer) -> None:
        self.peer = peer
        self.log.connected(peer)
        try:
            conn = self.service.connect(peer)
            self.conn = conn
            self.receive = conn.receive
            self.mirrors = bool(getattr(conn, "mirrors", False))
            self.pending_request = getattr(conn, "pending_request", None)
            self._answered(conn.start(), None)
        except Exception as exc:  # rule 3
            self._service_failed(exc)

    def _received_otherwise(self, data: bytes) -> None:
        state = self.state
        if state is OPEN:
            if self.preface is not None:
                self._read_preface(data)
            elif self.ready and not self.inbox and not self.eof_pending:
                self._give(data)
            elif data:
                self.inbox += data  # rule 2: kept until the service may have it
            else:
                self.eof_pending = True
        elif state is not CLOSED:  # closing or lingering: the input is dropped, within a budget
            if not data:
                self.eof = True
                if state is LINGERING:
                    self._linger_over()
                return
            self.linger_budget -= len(data)
            if self.linger_budget < 0:
                self.flooded = True  # it keeps sending after our FIN: stop paying for it
                if state is LINGERING:
                    self._linger_over()

    def _read_preface(self, data: bytes) -> None:
        if not data:
            self._preface_ended("the server stopped before its header was complete" if self.stopping
                                else "it closed before a complete header")
            self._abort()
            return
        try:
            done = self.preface.feed(data)
        except ValueError as exc:
            self._preface_failed(str(exc))
            return
        if done is None:
            return
        peer, rest = done
        self.preface = None
        if self.awaiting_tls:
            self.peer, self.tls_rest = peer, rest  # the handshake's: the service starts once secured()
            return
        self._open(peer)  # (the first request's deadline still counts from accept)
        if rest:
            self.inbox += rest

    def secured(self) -> None:
        """The adapter's TLS handshake after the preface is done: the service starts (rule 7). Without
        a preface waiting for it the service started at accept: nothing to do (a second start would
        log the client twice and call the service's ``connect`` twice, the first never closed)."""
        if not self.awaiting_tls:
            return
        self.awaiting_tls = False
        self.tls_rest = b""  # (the first request's deadline still counts from accept)
        if self.state is OPEN:
            self._open(self.peer)
        self._settle()

    def _preface_ended(self, why: str) -> None:
        name = getattr(self.preface, "name", "preface")
        self.log.refused(f"{name} connection from {self.peer.host}: {why}; closed")

    def _preface_failed(self, why: str) -> None:
        """The preface refused this connection (``why`` names the peer): logged, then closed as a
        ``Close`` closes (our FIN, the linger), so the peer sees an end rather than a reset."""
        self.log.refused(f"{why}; closed")
        self.state = CLOSING
        self.request_began = 0.0
        self.inbox = b""
        self._settle()

    def _grace_over(self) -> None:
        """A stop's grace ran out before the connection spoke: its goodbye (``_settle``), or for one
        still in its preface, the end, logged."""
        self.grace_until = 0.0
        if self.preface is not None:
            self._preface_ended("the server stopped before its header was complete")
            self._abort()
        elif self.awaiting_tls and self.state is OPEN:
            self._abort()  # its TLS handshake did not come in the grace

    def _give(self, data: bytes, *, fin: bool = True) -> None:
        if data and not self.spoke:
            self.spoke = True
            self.grace_until = 0.0
        try:
            reply = self.receive(data)
        except Exception as exc:  # rule 3
            self._service_failed(exc)
            return
        self._answered(reply, data, fin=fin)

    def _answered(self, reply: Reply, data: bytes | None, *, fin: bool = True) -> None:
        """The service answered ``data`` (None: the start) with ``reply``; an empty ``data`` is the
        end of the input (``fin``: because the peer closed its side)."""
        if self.state is not OPEN:
            return
        if reply:
            self.request_began = 0.0
            if reply.__class__ is bytes:
                if self.outbox:
                    self.outbox.append(Send(reply))
                else:
                    self._put(reply)
            elif reply.__class__ is list or reply.__class__ is tuple:
                self._queue().extend(reply)
            else:
                self._service_failed(TypeError(f"receive() returned {type(reply).__name__}, not a list or bytes"))
                return
        elif data and (self.request_began or self.pending_request is not None):
            # (With request_began set this is never the fast path: ``plain`` is False.)
            pending = False
            if self.pending_request is not None:
                try:
                    pending = self.pending_request()
                except Exception as exc:  # rule 3
                    self._service_failed(exc)
                    return
            if not pending:
                self.request_began = 0.0  # a whole request (or no notion of one): no deadline now
            elif not self.request_began:
                self.request_began = self.clock()
        if data is not None and not data:
            self.eof = fin
            self._queue().append(CLOSE)  # the peer is done: once the answer is out, so are we

    def _continue(self, then: Callable[[], Reply]) -> None:
        """A Wait is over: its continuation's reply goes ahead of whatever was queued behind it."""
        try:
            reply = then()
        except Exception as exc:  # rule 3
            self._service_failed(exc)
            return
        if reply.__class__ is bytes:
            self._queue().appendleft(Send(reply))
        elif reply:
            self._queue().extendleft(reversed(reply))

    def _queue(self) -> deque:
        if not self.outbox:
            self.outbox = deque()
        return self.outbox

    def _put(self, data: bytes) -> None:
        out = self.out
        if not out:
            self.out = data
        elif out.__class__ is bytearray:
            out += data
        else:
            self.out = bytearray(out) + data

    def _advance(self) -> None:
        """Move queued actions into ``out``, ``file``, a hold or the close (rule 1)."""
        while self.state is OPEN and not self.held_until and self.file is None:
            outbox = self.outbox  # (anew each turn: a Wait's continuation may have made a new queue)
            if not outbox:
                return
            action = outbox[0]
            kind = action.__class__
            if kind is Send:
                outbox.popleft()
                self._put(action.data)
                continue
            if (self.out or self.paused) and kind is not Close:
                return  # a Wait or a file starts once the bytes before it are out (and the adapter's buffer drained)
            outbox.popleft()
            if kind is Wait:
                if action.seconds > 0:
                    self.held_until = self.clock() + action.seconds
                    self.held_then = action.then
                elif action.then is not None:
                    self._continue(action.then)
            elif kind is SendFile:
                if action.count > 0:
                    self.file, self.file_offset, self.file_left = action, action.offset, action.count
                else:
                    action.file.close()
            elif kind is Close:
                self.state = CLOSING
                self.request_began = 0.0
                self._drop_queue()
                self.inbox = b""
            else:
                self._service_failed(TypeError(f"unknown action {action!r}"))
                return

    def _settle(self) -> None:
        """After any event: carry the answer forward, hand over kept input or say goodbye when
        allowed, then set the flags the adapters and the fast paths read."""
        while True:
            self._advance()
            state = self.state
            if state is not OPEN or self.preface is not None or self.conn is None:
                break
            if self.held_until or self.file is not None or self.outbox or self.paused or len(self.out) > HIGH_WATER:
                break
            if self.stopping and (self.inbox or self.eof_pending) and self.spoke:
                self.inbox = b""  # the server is stopping: input held back is never answered
                self.eof_pending = False
            if self.inbox:
                data, self.inbox = self.inbox, b""
                self._give(data)
            elif self.eof_pending:
                self.eof_pending = False
                self._give(b"")
            elif self.stopping and not self.out and not self.grace_until:
                self._give(b"", fin=False)  # rule 6: as if the peer had closed (it may still send: linger)
            else:
                break
        state = self.state
        ready = (state is OPEN and self.conn is not None and not self.held_until and self.file is None
                 and not self.outbox and not self.paused and len(self.out) <= HIGH_WATER)
        self.ready = ready
        plain = (ready and self.spoke and not self.out and not self.request_began and not self.inbox
                 and not self.eof_pending)
        self.plain = plain
        self.mirroring = plain and self.mirrors
        if state is OPEN:
            self.deadline = self.grace_until or self.held_until
        elif state is LINGERING:
            self.deadline = self.linger_until
        else:
            self.deadline = 0.0

    def _check_rate(self, now: float, backlog: int) -> None:
        """A file is going out: cut a client that took less than the minimum rate in a whole window
        (what left us: file bytes handed to the adapter, less what its backlog grew by)."""
        began = self.window_began
        if not began:
            self.window_began, self.window_moved, self.window_backlog = now, 0, backlog
            return
        if now - began < self.rate_window:
            return
        moved = self.window_moved + self.window_backlog - backlog
        if moved >= self.min_rate * self.rate_window:
            self.window_began, self.window_moved, self.window_backlog = now, 0, backlog
            return
        self.log.refused(f"client {client_name(self.peer)} took {max(0, moved):,} bytes in {now - began:.1f} s, "
                         f"under the minimum rate ({self.min_rate:,} bytes/s over {self.rate_window:g} s); closed")
        self._abort()

    def _linger_over(self) -> None:
        if self.backlog:
            return  # the adapter still holds our bytes: they leave first (idle rules still apply)
        self._finish()

    def _finish(self) -> None:
        self.state = CLOSED
        self.request_began = 0.0
        self._drop_queue()

    def _abort(self) -> None:
        if self.state is CLOSED and self.aborted:
            return
        self.state = CLOSED
        self.aborted = True
        self.out = b""
        self.held_then = None
        self.inbox = b""
        self._drop_queue()

    def _drop_file(self) -> None:
        if self.file is not None:
            self.file.file.close()
            self.file = None
            self.file_left = 0

    def _drop_queue(self) -> None:
        """Close the files of actions that will not run now (SendFile passes ownership to us)."""
        self._drop_file()
        for action in self.outbox:
            if action.__class__ is SendFile:
                action.file.close()
        self.outbox = ()

    def _service_failed(self, exc: Exception) -> None:
        self._log_failure("failed", exc)
        self._abort()

    def _log_failure(self, what: str, exc: Exception) -> None:
        where = ""
        tb = exc.__traceback__
        if tb is not None:
            while tb.tb_next is not None:
                tb = tb.tb_next
            code = tb.tb_frame.f_code
            where = f" at {code.co_filename.rpartition('/')[2]}:{tb.tb_lineno} in {code.co_name}"
        service = getattr(self.service, "name", "service")
        self.log.error(f"client {client_name(self.peer)}: the {service} service {what}: {exc!r}{where}; "
                       "this connection is closed, the server goes on")
