"""The one blocking driver: carries out a service's actions on a blocking socket.

sequential, thread, pool, fork, fork-signal and socketserver differ only in who calls
``serve_connection``. Rule: one error boundary per connection -- a reset, timeout or garbage
from this client ends this connection and nothing else. A ``Wait`` blocks only this client's
thread or process, and nothing is read while it runs, so the rule of ``actions.Wait`` (no input
reaches the service before the Wait is over) holds by construction; ``Wait.then``'s reply is
carried out before the actions after the Wait.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import threading
import time

from sockkit.lifecycle import StopSignal
from sockkit.models.settings import RECV_SIZE, Limits
from sockkit.services.actions import Close, Connection, Reply, Send, SendFile, Wait, as_actions

#: After our last byte, how long we keep reading (and discarding) before closing, so that
#: unread client data does not turn our FIN into a RST that destroys the reply in flight.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20


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
        self.stopping = False
        self.hurry = threading.Event()  # set by cut(): a Wait in progress ends at once

    def stop(self) -> None:
        """Stop taking requests: connections waiting for one see end-of-stream at once."""
        self.stopping = True
        for sock in list(self.waiting):
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


def serve_connection(sock: socket.socket, conn: Connection, limits: Limits, tracker: Tracker) -> None:
    """Run one client's conversation to its end; always closes ``sock`` and ``conn``."""
    if limits.tls is not None:
        try:
            sock = handshake(sock, limits, tracker)
        except OSError:
            conn.close()
            return
    tracker.live.add(sock)
    idle_timeout = limits.idle_timeout
    pending_request = getattr(conn, "pending_request", None)
    request_began = 0.0
    try:
        # Blocking socket, timeouts kept by the kernel: Python's own settimeout() polls before every
        # recv and send (strace: a poll and extra futex hand-offs per request, 2x the CPU).
        sock.settimeout(None)
        kernel_timeout(sock, idle_timeout)
        if not run_actions(sock, conn.start(), tracker):
            return
        if getattr(conn, "mirrors", False):
            mirror(sock, tracker)
            run_actions(sock, conn.receive(b""), tracker)  # end of stream or stopping: its goodbye
            return
        # The hot loop. Under the GIL every Python-level call per message is paid for several
        # times over in hand-offs between client threads (10 clients: a method call here cost
        # ~2 us of server CPU per request), so it makes none beyond the service's ``receive``:
        # bound methods are looked up once and the common answers (bytes, or a single Send) are
        # sent inline.
        recv, sendall, receive = sock.recv, sock.sendall, conn.receive
        announce, settled = tracker.waiting.add, tracker.waiting.discard
        while True:
            announce(sock)  # then check ``stopping``: the order Tracker.stop relies on
            if tracker.stopping:
                settled(sock)
                break
            data = recv(RECV_SIZE)
            settled(sock)
            actions = receive(data)
            if type(actions) is bytes:
                if data and not request_began:
                    sendall(actions)
                    continue
                actions = [Send(actions)]
            if request_began or not actions:
                if not actions and data and pending_request is not None and pending_request():
                    # Part of a request: the rest must come before an absolute deadline.
                    now = time.monotonic()
                    request_began = request_began or now
                    left = request_began + limits.request_timeout - now
                    if left <= 0:
                        return
                    kernel_timeout(sock, min(idle_timeout, left))
                elif request_began:
                    request_began = 0.0
                    kernel_timeout(sock, idle_timeout)
            if len(actions) == 1 and type(actions[0]) is Send and data:
                sendall(actions[0].data)
            elif not run_actions(sock, actions, tracker) or not data:
                return
        run_actions(sock, conn.receive(b""), tracker)  # stopping: let the service say goodbye
    except OSError:
        pass  # reset, timeout, broken pipe: this client is gone, the server goes on
    finally:
        tracker.waiting.discard(sock)
        tracker.live.discard(sock)
        conn.close()
        sock.close()


def mirror(sock: socket.socket, tracker: Tracker) -> None:
    """Send every chunk back unchanged until end of stream or a stop (``Connection.mirrors``).

    The loop a bare echo server would write, plus one flag check per chunk: no call into the
    service and no bookkeeping, which under the GIL is what the thread model's speed is made of.
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


def kernel_timeout(sock: socket.socket, seconds: float) -> None:
    """SO_RCVTIMEO/SO_SNDTIMEO: a blocking recv or send gives up (EAGAIN) after ``seconds``."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def handshake(sock: socket.socket, limits: Limits, tracker: Tracker) -> socket.socket:
    """The TLS handshake, in this client's own thread or process, under the request deadline
    (a client that opens TCP and never says hello is a trickler like any other).

    The TLS socket replaces the plain one in ``tracker.live`` (the thread model counts clients
    at accept), and waits for the hello in ``tracker.waiting``: a stop ends it at once, as it
    ends any idle connection, instead of letting it hold the drain until the deadline.
    """
    sock.settimeout(min(limits.idle_timeout, limits.request_timeout))
    try:
        tls = limits.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:
        sock.close()
        raise ConnectionError(f"TLS setup failed: {exc}") from exc
    finally:
        tracker.live.discard(sock)
    tracker.live.add(tls)
    tracker.waiting.add(tls)  # then check ``stopping``: the order Tracker.stop relies on
    try:
        if tracker.stopping:
            raise ConnectionAbortedError("the server is stopping")
        tls.do_handshake()
    except (OSError, ValueError) as exc:
        tracker.live.discard(tls)
        tls.close()
        if isinstance(exc, OSError):
            raise
        raise ConnectionError(f"TLS handshake failed: {exc}") from exc
    finally:
        tracker.waiting.discard(tls)
    return tls


def run_actions(sock: socket.socket, actions: Reply, tracker: Tracker) -> bool:
    """Carry out ``actions`` in order; False once the connection was closed."""
    for action in as_actions(actions):
        kind = type(action)
        if kind is Send:
            sock.sendall(action.data)
        elif kind is SendFile:
            send_file(sock, action)
        elif kind is Wait:
            # Only this client's thread or process waits; a second signal cuts the wait short.
            if tracker.hurry.wait(action.seconds):
                raise ConnectionAbortedError("server stopping")
            if action.then is not None and not run_actions(sock, action.then(), tracker):
                return False
        elif kind is Close:
            linger_close(sock)
            return False
        else:
            raise TypeError(f"unknown action {action!r}")
    return True


#: Bytes read from disk per send under TLS (one reused buffer per transfer).
TLS_FILE_CHUNK = 256 * 1024


def send_file(sock: socket.socket, action: SendFile) -> None:
    """Zero-copy where the kernel can (``socket.sendfile`` uses ``os.sendfile``).

    Under TLS the bytes must be encrypted in user space, and ``SSLSocket.sendfile`` falls back
    to reading and sending 8 KiB at a time (131,072 Python-level turns per GiB); a reused
    256 KiB buffer read with ``preadv`` and sent with ``sendall`` does the same with 32x fewer.
    """
    try:
        if action.count:
            send = _send_file_tls if isinstance(sock, ssl.SSLSocket) else _send_file_plain
            sent = send(sock, action)
            if sent != action.count:
                raise ConnectionError(f"file shrank while being sent ({sent} of {action.count} bytes)")
    finally:
        action.file.close()


def _send_file_plain(sock: socket.socket, action: SendFile) -> int:
    """``os.sendfile`` on the blocking socket. Not ``socket.sendfile``: on a blocking socket whose
    SO_SNDTIMEO expired it would wait for writability with no timeout at all."""
    fd, out = action.file.fileno(), sock.fileno()
    offset, remaining = action.offset, action.count
    while remaining:  # bounded: every turn sends at least one byte, raises or returns
        try:
            sent = os.sendfile(out, fd, offset, min(remaining, 1 << 30))
        except BlockingIOError:
            raise TimeoutError("client stopped reading") from None
        if sent == 0:
            break  # the file shrank: the caller reports it
        offset += sent
        remaining -= sent
    return action.count - remaining


def _send_file_tls(sock: ssl.SSLSocket, action: SendFile) -> int:
    fd = action.file.fileno()
    buffer = bytearray(min(TLS_FILE_CHUNK, action.count))
    view = memoryview(buffer)
    offset, remaining = action.offset, action.count
    while remaining:  # bounded: every turn sends at least one byte or returns
        got = os.preadv(fd, [view[:min(len(view), remaining)]], offset)
        if got <= 0:
            break  # the file shrank: the caller reports it
        sock.sendall(view[:got])
        offset += got
        remaining -= got
    return action.count - remaining


def linger_close(sock: socket.socket) -> None:
    """Half-close, then read what the peer still sends (bounded) so our FIN is not a RST."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(LINGER_SECONDS)
        deadline = time.monotonic() + LINGER_SECONDS
        drained = 0
        while drained < LINGER_BYTES and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass
