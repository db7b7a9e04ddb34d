"""The accept loop shared by the blocking models.

It selects on every listener plus the stop signal's wake-up descriptor, so a SIGTERM ends it
at once (socketserver's 0.5 s ``shutdown()`` poll is the anti-pattern, cpython#88932).
Accept errors that mean "out of descriptors or memory" back off briefly and log at most once a
second instead of spinning in a busy loop.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sockkit.lifecycle import Log, StopSignal, peer_of
from sockkit.models.blocking import linger_close
from sockkit.net import tune_accepted
from sockkit.services.actions import Peer

if TYPE_CHECKING:
    import ssl

EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
BACKOFF_SECONDS = 0.1


class AcceptThrottle:
    """Back-off and rate-limited logging for accept errors (one log line a second at most)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.last_logged = 0.0
        self.suppressed = 0

    def failed(self, exc: OSError) -> float:
        """Seconds to wait before accepting again (0: retry at once)."""
        if exc.errno not in EXHAUSTED:
            return 0.0  # ECONNABORTED and friends: that client left before we took it
        now = time.monotonic()
        if now - self.last_logged >= 1.0:
            more = f" ({self.suppressed} more)" if self.suppressed else ""
            self.log.error(f"accept failed: {exc.strerror}; backing off{more}")
            self.last_logged, self.suppressed = now, 0
        else:
            self.suppressed += 1
        return BACKOFF_SECONDS


def accept_forever(listeners: list[socket.socket], stop: StopSignal, log: Log,
                   on_client: Callable[[socket.socket, Peer], None],
                   on_wake: Callable[[], None] = lambda: None, tick: float | None = None) -> None:
    """Hand every accepted client to ``on_client`` until the stop signal fires.

    ``on_wake`` runs after every wake-up (signals such as SIGCHLD poke the same descriptor) and
    at least every ``tick`` seconds, for work like reaping children.
    """
    selector = selectors.DefaultSelector()
    throttle = AcceptThrottle(log)
    for listener in listeners:
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ)
    selector.register(stop.fileno(), selectors.EVENT_READ)
    try:
        while not stop.stopping:
            for key, _ in selector.select(tick):
                if key.fileobj == stop.fileno():
                    stop.drain_pipe()
                    continue
                try:
                    sock, address = key.fileobj.accept()
                except BlockingIOError:
                    continue
                except OSError as exc:
                    pause = throttle.failed(exc)
                    if pause:
                        time.sleep(pause)
                    continue
                sock.setblocking(True)
                tune_accepted(sock)
                on_client(sock, peer_of(address))
            on_wake()
    finally:
        selector.close()
        for listener in listeners:
            listener.close()


#: TLS refusals in progress at once (each a thread for at most REFUSE_SECONDS + LINGER_SECONDS); past them the
#: busy line goes out in plain text, as it does under the fork models.
TLS_REFUSERS = 4
#: Longest a refused TLS client gets to finish its handshake and take the busy line.
REFUSE_SECONDS = 2.0


class Refuser:
    """Tells clients over the connection limit that the server is busy, never blocking the caller.

    Plain TCP: the busy line at once. Under TLS that line must travel inside a TLS session, or
    the client sees a failed handshake instead of "busy": up to TLS_REFUSERS threads each do the
    handshake and send it under REFUSE_SECONDS; past them, or where threads must not be started
    (``threads=False``: the fork models, whose children would inherit a copy of a thread caught
    inside OpenSSL), the line goes out in plain text (sockkit's client still reads it as busy).
    """

    def __init__(self, reply: bytes, tls: ssl.SSLContext | None, *, threads: bool = True) -> None:
        self.reply = reply
        self.tls = tls if threads else None
        self.slots = threading.BoundedSemaphore(TLS_REFUSERS)

    def __call__(self, sock: socket.socket) -> None:
        if self.tls is None or not self.slots.acquire(blocking=False):
            refuse(sock, self.reply)
            return
        try:
            threading.Thread(target=self._refuse_over_tls, args=(sock,), name="sockkit-refuse", daemon=True).start()
        except RuntimeError:  # no thread to be had: the plain line will do
            self.slots.release()
            refuse(sock, self.reply)

    def _refuse_over_tls(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(REFUSE_SECONDS)
            with self.tls.wrap_socket(sock, server_side=True) as tls:
                tls.sendall(self.reply)
                # A FIN after the line, not a reset: a client that already sent its request
                # would otherwise risk losing the line in flight.
                linger_close(tls)
        except (OSError, ValueError):
            pass  # a client that cannot finish a handshake in time is refused all the same
        finally:
            sock.close()
            self.slots.release()


def refuse(sock: socket.socket, reply: bytes) -> None:
    """Tell a client over the connection limit that we are busy, without ever blocking."""
    try:
        sock.setblocking(False)
        if reply:
            sock.send(reply)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()
