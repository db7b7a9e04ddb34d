"""The blocking adapter: one client's connection engine driven over a blocking socket.

sequential, thread, pool, fork, fork-signal and socketserver differ only in who calls
``serve_connection``. What a connection does is the engine's (models/engine.py); this file only
moves bytes and time: ``sendall``, ``os.sendfile``, kernel timeouts for the engine's deadlines
(``SO_RCVTIMEO``/``SO_SNDTIMEO``: Python's own ``settimeout`` would poll before every call), a
``Wait`` as an event wait that a second signal cuts short, TLS handshakes in the client's own thread
or process. Rule: a reset, timeout or garbage from this client ends this connection and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import threading
import time

from sockkit.lifecycle import StopSignal
from sockkit.models.engine import (
    LINGER_BYTES,
    LINGER_SECONDS,
    LINGERING,
    OPEN,
    STOP_GRACE_SECONDS,
    Engine,
    open_engine,
    sweep_period,
)
from sockkit.models.settings import RECV_SIZE, SENDFILE_MAX, Server
from sockkit.services.actions import Peer


class Tracker:
    """Live connections of one process, so a stop can close idle ones and cut the rest.

    Lock-free on purpose: ``stop`` runs inside a signal handler, which must never wait for a
    lock its own thread may hold. Set operations are atomic under the GIL, and the order
    (a connection adds itself to ``waiting``, *then* checks ``stopping``; ``stop`` sets the flag,
    *then* looks at who is waiting) means no idle connection is missed.
    """

    def __init__(self) -> None:
        self.live: set[socket.socket] = set()
        #: Connections whose reads a stop may end at once: those between requests, and those in the
        #: mirror loop for as long as it runs (a chunk already received is still echoed first).
        self.waiting: set[socket.socket] = set()
        #: Connections waiting for their first bytes (a TLS hello, a preface, a first request): a stop
        #: gives them the engine's grace (rule 6) before their reads are ended.
        self.fresh: set[socket.socket] = set()
        self.stopping = False
        self.hurry = threading.Event()  # set by cut(): a Wait in progress ends at once
        self.waker: threading.Timer | None = None

    def stop(self) -> None:
        """Stop taking requests: connections waiting for one see end-of-stream at once; those that
        have not spoken yet, once the grace is over (one timer thread: a blocked read cannot be given
        a shorter kernel timeout, and this may run in a signal handler, which must not wait)."""
        self.stopping = True
        for sock in list(self.waiting):
            _shutdown(sock, socket.SHUT_RD)
        if self.fresh and self.waker is None:
            self.waker = threading.Timer(STOP_GRACE_SECONDS + 0.05, self._end_fresh)
            self.waker.daemon = True
            with contextlib.suppress(RuntimeError):  # no thread to be had: the request deadline ends them
                self.waker.start()

    def _end_fresh(self) -> None:
        for sock in list(self.fresh):
            _shutdown(sock, socket.SHUT_RD)

    def cut(self) -> None:
        """The drain deadline passed: end every connection now."""
        self.stopping = True
        self.hurry.set()
        for sock in list(self.live):
            _shutdown(sock, socket.SHUT_RDWR)

    def follow(self, stop: StopSignal) -> None:
        """The first SIGTERM/SIGINT stops taking requests, a second cuts every connection."""
        stop.on_signal(lambda count: self.stop() if count == 1 else self.cut())

    def drain(self, seconds: float, hurry=lambda: False) -> None:
        """After accepting stops: let in-flight clients finish for ``seconds``, then cut the rest."""
        self.stop()
        if not self.wait_empty(seconds, hurry):
            self.cut()
            self.wait_empty(1.0)

    def wait_empty(self, seconds: float, hurry=lambda: False) -> bool:
        deadline = time.monotonic() + seconds
        while self.live and time.monotonic() < deadline and not hurry():
            time.sleep(0.02)
        return not self.live


def _shutdown(sock: socket.socket, how: int) -> None:
    # The plain socket's shutdown even for TLS: ``SSLSocket.shutdown`` also drops the TLS state,
    # and a reply another thread is still sending would then go out unencrypted.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, how)


def serve_connection(sock: socket.socket, peer: Peer, server: Server, tracker: Tracker) -> None:
    """Run one client's conversation to its end; always closes ``sock`` and releases the engine."""
    tracker.live.add(sock)  # (the thread model counted it at accept already)
    engine = open_engine(server, peer, time.monotonic)
    try:
        if engine.awaiting_tls:
            read_preface_in_clear(sock, engine, tracker)
        if server.limits.tls is not None and engine.state is OPEN:
            sock = handshake(sock, server, tracker)
            if engine.awaiting_tls:
                engine.secured()  # the service starts now (without a preface it started at accept)
        # Blocking socket, timeouts kept by the kernel: Python's own settimeout() polls before every
        # recv and send (strace: a poll and extra futex hand-offs per request, 2x the CPU).
        sock.settimeout(None)
        converse(sock, engine, tracker)
    except OSError:
        engine.reset()  # reset, timeout, broken pipe: this client is gone, the server goes on
    finally:
        tracker.waiting.discard(sock)
        tracker.fresh.discard(sock)
        tracker.live.discard(sock)
        engine.release()
        sock.close()


def converse(sock: socket.socket, engine: Engine, tracker: Tracker) -> None:
    timeout = Timeout(sock)
    while carry_out(sock, engine, tracker, timeout):
        if engine.fresh:
            first_read(sock, engine, tracker, timeout)
            continue
        if engine.mirroring:
            mirror(sock, tracker)
            engine.received(b"")  # end of stream or stopping: the service's goodbye
            continue
        # The hot loop. Under the GIL every Python-level call per message is paid for several
        # times over in hand-offs between client threads (10 clients: a method call here cost
        # ~2 us of server CPU per request), so it makes one, ``received``, which hands back the
        # common answer (bytes, nothing else pending) to send inline.
        recv, sendall, received = sock.recv, sock.sendall, engine.received
        announce, settled = tracker.waiting.add, tracker.waiting.discard
        while True:
            announce(sock)  # then check ``stopping``: the order Tracker.stop relies on
            if tracker.stopping:
                settled(sock)
                engine.stop()
                break
            data = recv(RECV_SIZE)
            settled(sock)
            reply = received(data)
            if not reply:
                break
            sendall(reply)


def first_read(sock: socket.socket, engine: Engine, tracker: Tracker, timeout: Timeout) -> None:
    """A read before the connection has spoken (its preface, its first request): not between
    requests, so a stop does not end it at once but gives it the engine's grace (rule 6) -- the
    kernel timeout if the stop came first, the tracker's timer if it came during the read."""
    tracker.fresh.add(sock)  # then check ``stopping``: the order Tracker.stop relies on
    try:
        if tracker.stopping and not engine.stopping:
            engine.stop()
            if not (engine.fresh and engine.wants_read):
                return
            timeout.set(engine.read_timeout(time.monotonic()))
        try:
            data = sock.recv(RECV_SIZE)
        except TimeoutError:
            if not engine.grace_until:
                raise  # its own deadline
            engine.timer(time.monotonic())  # the grace is over (or nearly: then one more short read)
            return
    finally:
        tracker.fresh.discard(sock)
    if tracker.stopping and not engine.stopping:
        engine.stop()  # woken by the tracker's timer (b"") or it spoke during the stop
    reply = engine.received(data)
    if reply:
        sock.sendall(reply)


#: Most bytes a preface may take before the TLS handshake (a PROXY v2 header with its TLVs: 4 KiB).
PEEK_SIZE = 4096


def read_preface_in_clear(sock: socket.socket, engine: Engine, tracker: Tracker) -> None:
    """The preface before a TLS handshake (rule 7), read to its last byte and not one more: each read
    peeks, and only what the preface took is then taken off the socket, so the handshake finds its
    hello where TLS expects it. Ends with the engine wanting the handshake, or not open (refused,
    closed, a deadline: ``converse`` then carries out its end on the plain socket)."""
    timeout = Timeout(sock)
    while engine.state is OPEN and engine.preface is not None:
        tracker.fresh.add(sock)  # then check ``stopping``: the order Tracker.stop relies on
        try:
            if tracker.stopping and not engine.stopping:
                engine.stop()
                if engine.state is not OPEN:
                    return
            timeout.set(engine.read_timeout(time.monotonic()))
            try:
                peeked = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
            except TimeoutError:
                if not engine.grace_until:
                    raise
                engine.timer(time.monotonic())
                continue
        finally:
            tracker.fresh.discard(sock)
        if tracker.stopping and not engine.stopping:
            engine.stop()
        engine.received(peeked)
        taken = len(peeked) - len(engine.tls_rest) if engine.wants_handshake else len(peeked)
        if peeked and engine.state is OPEN:
            sock.recv(taken, socket.MSG_WAITALL)  # bytes already there: the preface's, dropped


def carry_out(sock: socket.socket, engine: Engine, tracker: Tracker, timeout: Timeout) -> bool:
    """Do what the engine wants until it wants to read (True) or the connection is over (False)."""
    while True:
        out = engine.out
        if out:
            sock.sendall(out)
            engine.sent(len(out))
        elif engine.file is not None:
            send_file(sock, engine)
        elif engine.wants_shutdown:
            sock.shutdown(socket.SHUT_WR)
            engine.shut(True)
        elif engine.state is LINGERING:
            linger(sock, engine, timeout)
        elif engine.held_until:
            # Only this client's thread or process waits; a second signal cuts the wait short.
            if tracker.hurry.wait(max(0.0, engine.held_until - time.monotonic())):
                raise ConnectionAbortedError("server stopping")
            engine.timer(time.monotonic())
        elif engine.state is OPEN and engine.wants_read:
            timeout.set(engine.read_timeout(time.monotonic()))
            return True
        else:
            return False  # closed, or nothing left that it could want


def mirror(sock: socket.socket, tracker: Tracker) -> None:
    """Send every chunk back unchanged until end of stream or a stop (``Connection.mirrors``).

    The loop a bare echo server would write, plus one flag check per chunk: no call into the
    engine or the service and no bookkeeping, which under the GIL is what the thread model's
    speed is made of. (Idle time is the kernel's SO_RCVTIMEO here, so no progress note is needed.)
    """
    recv, sendall = sock.recv, sock.sendall
    # In ``waiting`` for the whole loop, added before ``stopping`` is checked: the order Tracker.stop
    # relies on. (After an error, serve_connection's ``finally`` takes it out.)
    tracker.waiting.add(sock)
    while not tracker.stopping:
        data = recv(RECV_SIZE)
        if not data:
            break
        sendall(data)
    tracker.waiting.discard(sock)


def linger(sock: socket.socket, engine: Engine, timeout: Timeout) -> None:
    """After our FIN: read and drop what the peer still sends until the engine says enough."""
    while engine.state is LINGERING:
        now = time.monotonic()
        if now >= engine.linger_until:
            engine.timer(now)
            return
        timeout.set(engine.read_timeout(now))
        try:
            data = sock.recv(LINGER_READ)
        except OSError:
            engine.reset()  # the peer reset, or the linger's time ran out in the kernel
            return
        engine.received(data)


#: Bytes read per call while lingering (what is read is dropped: no need for the big buffer).
LINGER_READ = 64 * 1024


class Timeout:
    """The socket's kernel timeouts, changed only when the engine's deadline moves."""

    __slots__ = ("seconds", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seconds = -1.0

    def set(self, seconds: float) -> None:
        if seconds != self.seconds:
            kernel_timeout(self.sock, seconds)
            self.seconds = seconds


def kernel_timeout(sock: socket.socket, seconds: float) -> None:
    """SO_RCVTIMEO/SO_SNDTIMEO: a blocking recv or send gives up (EAGAIN) after ``seconds``."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def handshake(sock: socket.socket, server: Server, tracker: Tracker) -> socket.socket:
    """The TLS handshake, in this client's own thread or process, under the request deadline
    (a client that opens TCP and never says hello is a trickler like any other).

    The TLS socket replaces the plain one in ``tracker.live`` (the thread model counts clients
    at accept), and waits for the hello in ``tracker.fresh``: a connection that has not spoken
    yet, which a stop gives the engine's grace (rule 6), not the whole deadline.
    """
    limits = server.limits
    sock.settimeout(min(limits.idle_timeout, limits.request_timeout))
    try:
        tls = limits.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:
        sock.close()
        raise ConnectionError(f"TLS setup failed: {exc}") from exc
    finally:
        tracker.live.discard(sock)
    tracker.live.add(tls)
    tracker.fresh.add(tls)  # then check ``stopping``: the order Tracker.stop relies on
    try:
        if tracker.stopping:
            tls.settimeout(min(STOP_GRACE_SECONDS, tls.gettimeout() or STOP_GRACE_SECONDS))
        tls.do_handshake()
    except (OSError, ValueError) as exc:
        tracker.live.discard(tls)
        tls.close()
        if isinstance(exc, OSError):
            raise
        raise ConnectionError(f"TLS handshake failed: {exc}") from exc
    finally:
        tracker.fresh.discard(tls)
    return tls


#: Bytes read from disk per send under TLS (one reused buffer per transfer).
TLS_FILE_CHUNK = 256 * 1024


def send_file(sock: socket.socket, engine: Engine) -> None:
    """The engine's file range, zero-copy where the kernel can, under the engine's idle and
    minimum-rate rules (its ``sweep``, at least every ``sweep_period``).

    Plain sockets: ``os.sendfile`` with the descriptor non-blocking for the transfer, and ``poll``
    for writability between calls. A blocking ``sendfile`` cannot be bounded in time: its
    SO_SNDTIMEO restarts with every byte the client takes (measured: one call to a client taking
    4 KiB every 2 s blocked 12 s under a 3 s timeout), so a reader sipping a file would never be
    looked at. Not ``socket.sendfile`` either, for the same reason.
    Under TLS the bytes must be encrypted in user space, and ``SSLSocket.sendfile`` falls back
    to reading and sending 8 KiB at a time (131,072 Python-level turns per GiB); a reused
    256 KiB buffer read with ``preadv`` and sent with ``sendall`` does the same with 32x fewer.
    The engine's rules are checked between chunks there (a chunk to a slow reader may take
    ``TLS_FILE_CHUNK`` / its rate before the check).
    """
    fd = engine.file.file.fileno()
    if isinstance(sock, ssl.SSLSocket):
        buffer = memoryview(bytearray(min(TLS_FILE_CHUNK, engine.file_left)))
        while engine.file is not None:  # bounded: every turn sends at least one byte or raises
            try:
                got = os.preadv(fd, [buffer[:min(len(buffer), engine.file_left)]], engine.file_offset)
            except OSError as exc:
                engine.file_failed(exc)  # the file's fault (EIO from the disk): logged, as sendfile's
                return
            if got <= 0:
                raise ConnectionError(f"file shrank while being sent ({engine.file_left} bytes short)")
            sock.sendall(buffer[:got])
            engine.file_sent(got)
            _check(engine, time.monotonic())
        return
    out = sock.fileno()
    writable = select.poll()
    writable.register(out, select.POLLOUT)
    tick = sweep_period(engine)
    next_check = time.monotonic() + tick
    os.set_blocking(out, False)
    try:
        while engine.file is not None:  # bounded: each turn sends a byte, or waits at most a tick
            try:
                sent = os.sendfile(out, fd, engine.file_offset, min(engine.file_left, SENDFILE_MAX))
            except BlockingIOError:
                writable.poll(tick * 1000)  # (a cut shuts the socket down: the poll wakes at once)
                sent = -1
            except OSError as exc:
                engine.file_failed(exc)  # logged if it is the file's (EIO), silent if the socket's
                return
            if sent == 0:
                raise ConnectionError(f"file shrank while being sent ({engine.file_left} bytes short)")
            if sent > 0:
                engine.file_sent(sent)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + tick
                _check(engine, now)
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(out, True)


def _check(engine: Engine, now: float) -> None:
    """The engine's idle and minimum-rate rules, during a file transfer."""
    if engine.sweep(now) and engine.state is not OPEN:
        raise TimeoutError("client too slow or stopped reading")


def linger_close(sock: socket.socket, seconds: float = LINGER_SECONDS, budget: int = LINGER_BYTES) -> None:
    """For a socket with no engine (a refusal): half-close, then read what the peer still sends
    (bounded) so our FIN is not a RST."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        while budget > 0 and time.monotonic() < deadline:
            chunk = sock.recv(LINGER_READ)
            if not chunk:
                break
            budget -= len(chunk)
    except OSError:
        pass

