"""One thread multiplexing every socket with one readiness poller: the chapter's select server, fixed.

Rules kept here:
- Never "hope it won't block": every socket is non-blocking; a send that cannot finish leaves
  its rest in the channel's buffer and the socket is watched for writability (the chapter's own
  caveat, and what asyncio's selector transport does).
- A client whose unsent output passes ``HIGH_WATER`` is not read from until it drains, so a
  client that never reads costs at most that much memory.
- ``Wait`` is a timer in a heap, never a sleep: a slow request holds only its own connection.
  While it runs the connection is not watched for reading (``actions.Wait``'s rule: no input
  reaches the service before the Wait is over); when it fires, ``Wait.then``'s reply goes ahead
  of the queued actions. The heap holds the channel object itself and a fired timer acts only if
  that very channel is still open (a descriptor number is reused at once by the next client).
- The poller is ``select.epoll`` (``select.poll`` where there is none), used directly with a
  descriptor -> channel dict: the ``selectors`` module's per-event key objects and mask
  translation are a measurable share of a 1 KiB echo (see docs/benchmarks.md).
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import socket
import time
from collections import deque

from sockkit.lifecycle import peer_of
from sockkit.models.accept import AcceptThrottle, refuse
from sockkit.models.blocking import LINGER_BYTES, LINGER_SECONDS
from sockkit.models.settings import HIGH_WATER, RECV_SIZE, Server
from sockkit.net import tune_accepted
from sockkit.services.actions import Close, Reply, Send, SendFile, Wait, as_actions


class Poller:
    """``select.epoll`` where there is one, else ``select.poll``: register/modify/unregister a
    descriptor with READ|WRITE, ``poll(seconds)`` -> [(fd, events)]. Both report a hang-up or an
    error as ERROR bits even when they were not asked for."""

    def __init__(self, use_epoll: bool = hasattr(select, "epoll")) -> None:
        epoll = select.epoll if use_epoll else None
        self._poller = epoll() if epoll is not None else select.poll()
        self.register = self._poller.register
        self.modify = self._poller.modify
        self.unregister = self._poller.unregister
        if epoll is not None:
            self.poll = self._poller.poll  # seconds, as a float
            self.close = self._poller.close
        else:
            self.poll = self._poll_ms
            self.close = lambda: None

    def _poll_ms(self, timeout: float) -> list[tuple[int, int]]:
        return self._poller.poll(timeout * 1000)


# epoll and poll share these bit values (EPOLLIN == POLLIN, ...).
READ, WRITE = select.POLLIN, select.POLLOUT
ERROR = select.POLLERR | select.POLLHUP
#: Actions queued behind a Wait or a pending send before we stop reading a client.
MAX_QUEUED_ACTIONS = 256
#: Clients accepted per wake-up of a listener, so a connect storm cannot starve the others.
ACCEPTS_PER_WAKE = 64
SWEEP_SECONDS = 1.0


class Channel:
    """One client's socket, its queued actions and its unsent bytes."""

    __slots__ = (
        "buffer",
        "closing",
        "conn",
        "fd",
        "file",
        "held",
        "last_seen",
        "linger_budget",
        "linger_until",
        "mask",
        "mirrors",
        "outbox",
        "pending_request",
        "queued",
        "request_began",
        "sock",
    )

    def __init__(self, sock: socket.socket, conn, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.conn = conn
        self.outbox: deque = deque()
        self.queued = 0  # bytes of the Send actions waiting in outbox (they count toward HIGH_WATER)
        self.buffer = bytearray()
        self.file: SendFile | None = None  # the file being sent, with offset/count still to go
        self.held = False  # a Wait is running
        self.closing = False  # a Close was reached: half-closed, discarding input until EOF
        self.mask = READ
        self.last_seen = now
        self.linger_until = 0.0
        self.linger_budget = LINGER_BYTES  # input still discarded after our FIN before we give up
        self.pending_request = getattr(conn, "pending_request", None)
        self.mirrors = getattr(conn, "mirrors", False)
        self.request_began = 0.0  # when the unfinished request's first bytes came (0: none)

    @property
    def idle(self) -> bool:
        return not (self.outbox or self.buffer or self.file or self.held)


class SelectServer:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.poller = Poller()
        self.channels: dict[int, Channel] = {}
        #: The channels of ``channels`` that mirror (``Connection.mirrors``) and have nothing queued,
        #: buffered, held or closing: the loop hands their readable events straight to ``_mirror``.
        #: ``_watch`` keeps it current after every change of state, ``_close`` on the way out.
        self.mirroring: dict[int, Channel] = {}
        self.timers: list = []
        self.sequence = itertools.count()
        self.throttle = AcceptThrottle(server.log)
        self.accepting = True
        self.drain_deadline = 0.0
        self.muted_until = 0.0
        self.listeners = {listener.fileno(): listener for listener in server.listeners}
        #: The receive buffer of mirroring clients (one is enough: the loop is one thread).
        self.inbox = memoryview(bytearray(RECV_SIZE))

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        stop = self.server.stop
        for listener in self.listeners.values():
            listener.setblocking(False)
            self.poller.register(listener.fileno(), READ)
        self.poller.register(stop.fileno(), READ)
        channels, mirroring = self.channels, self.mirroring
        poll = self.poller.poll
        next_sweep = time.monotonic() + SWEEP_SECONDS
        try:
            while self.accepting or channels:
                timeout = SWEEP_SECONDS
                if self.timers:
                    timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
                events = poll(timeout)
                now = time.monotonic()
                for fd, mask in events:
                    channel = mirroring.get(fd)
                    if channel is not None and mask == READ:
                        self._mirror(channel, now)
                        continue
                    channel = channels.get(fd)
                    if channel is None:
                        if fd in self.listeners or fd == stop.fileno():
                            self._on_listener(fd, now)
                        continue  # closed earlier in this batch
                    if mask == READ:  # the common case: one readable client
                        self._on_readable(channel, now)
                        continue
                    if mask & ERROR:
                        mask |= channel.mask  # a hang-up or error: let the read or the send find it
                    if mask & READ and channel.mask & READ:
                        self._on_readable(channel, now)
                    if mask & WRITE and channel.mask & WRITE and fd in channels:
                        self._pump(channel, now)
                while self.timers and self.timers[0][0] <= now:
                    _, _, channel, then = heapq.heappop(self.timers)
                    if channels.get(channel.fd) is channel and channel.held:
                        self._wait_over(channel, then, now)
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + SWEEP_SECONDS
        finally:
            for channel in list(self.channels.values()):
                self._close(channel)
            for listener in self.listeners.values():
                listener.close()
            self.poller.close()

    def _on_listener(self, fd: int, now: float) -> None:
        stop = self.server.stop
        if fd == stop.fileno():
            stop.drain_pipe()
            if stop.stopping and self.accepting:
                self._begin_stop(now)
            if stop.hurry:
                for channel in list(self.channels.values()):
                    self._close(channel)
            return
        listener = self.listeners[fd]
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, address = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                pause = self.throttle.failed(exc)
                if pause:
                    # Out of descriptors: stop watching listeners briefly instead of spinning.
                    self._mute_listeners(now + pause)
                return
            self._admit(sock, address, now)

    def _admit(self, sock: socket.socket, address, now: float) -> None:
        server = self.server
        if len(self.channels) >= server.limits.max_connections:
            refuse(sock, server.service.busy_reply())
            return
        sock.setblocking(False)
        tune_accepted(sock)
        peer = peer_of(address)
        server.log.connected(peer)
        channel = Channel(sock, server.service.connect(peer), now)
        self.channels[channel.fd] = channel
        self.poller.register(channel.fd, READ)
        self._enqueue(channel, channel.conn.start(), now)

    def _on_readable(self, channel: Channel, now: float) -> None:
        if channel.fd in self.mirroring:
            self._mirror(channel, now)
            return
        try:
            data = channel.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._close(channel)
            return
        self._received(channel, data, now)

    def _mirror(self, channel: Channel, now: float) -> None:
        """An idle mirroring client (``Connection.mirrors``): its chunk goes straight back from one
        reused buffer, so no bytes object is made per message (CPU per request about 6 % lower
        than ``recv`` + ``send`` here, ten-round paired A/B)."""
        inbox = self.inbox
        try:
            count = channel.sock.recv_into(inbox)
        except BlockingIOError:
            return
        except OSError:
            self._close(channel)
            return
        if not count:
            self._received(channel, b"", now)  # end of stream: the service says what to do
            return
        channel.last_seen = now
        try:
            sent = channel.sock.send(inbox[:count])
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(channel)
            return
        if sent < count:
            channel.buffer += inbox[sent:count]  # copied out: the buffer is reused
            self._watch(channel)

    def _received(self, channel: Channel, data: bytes, now: float) -> None:
        channel.last_seen = now
        if channel.closing:
            channel.linger_budget -= len(data)
            if not data or channel.linger_budget < 0:
                # Peer closed too (clean), or it keeps sending after our FIN: stop paying for it.
                self._close(channel)
            return
        if channel.mirrors and data:
            actions = data  # the service's answer without asking it (Connection.mirrors)
        else:
            try:
                actions = channel.conn.receive(data)
            except Exception as exc:  # a service bug must cost one connection, not the server
                self.server.log.error(f"service failed: {exc!r}")
                self._close(channel)
                return
        if not actions:
            if data and channel.pending_request is not None and channel.pending_request():
                channel.request_began = channel.request_began or now
            return
        if channel.request_began:
            channel.request_began = 0.0
        # Fast path: nothing queued and one reply (bytes, or a single Send) -- try it now, as
        # asyncio's transports do. (``idle`` spelled out: a property call per message is
        # measurable in this loop.)
        if type(actions) is bytes:
            data_out = actions
        elif len(actions) == 1 and type(actions[0]) is Send:
            data_out = actions[0].data
        else:
            data_out = None
        if data_out is not None and not (channel.outbox or channel.buffer or channel.file or channel.held):
            try:
                sent = channel.sock.send(data_out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(channel)
                return
            if sent < len(data_out):
                channel.buffer += memoryview(data_out)[sent:]
                self._watch(channel)
            return
        self._enqueue(channel, actions, now)

    # -- carrying out actions --------------------------------------------------------------------
    def _enqueue(self, channel: Channel, actions: Reply, now: float) -> None:
        actions = as_actions(actions)
        channel.outbox.extend(actions)
        channel.queued += sum(len(action.data) for action in actions if type(action) is Send)
        self._pump(channel, now)

    def _pump(self, channel: Channel, now: float) -> None:
        """Carry out queued actions until one has to wait for time or for the socket."""
        try:
            while True:
                if channel.buffer:
                    sent = channel.sock.send(channel.buffer)
                    del channel.buffer[:sent]
                    if channel.buffer:
                        break
                if channel.file is not None and not self._send_file(channel):
                    break
                if channel.held or not channel.outbox:
                    break
                action = channel.outbox.popleft()
                kind = type(action)
                if kind is Send:
                    channel.queued -= len(action.data)
                    channel.buffer += action.data
                elif kind is SendFile:
                    channel.file = action
                elif kind is Wait:
                    channel.held = True
                    heapq.heappush(self.timers, (now + action.seconds, next(self.sequence), channel, action.then))
                elif kind is Close:
                    channel.outbox.clear()
                    channel.queued = 0
                    channel.outbox.append(action)  # stays queued until the buffer is flushed
                    if not channel.buffer and channel.file is None:
                        self._half_close(channel, now)
                    break
        except BlockingIOError:
            pass
        except OSError:
            self._close(channel)
            return
        if channel.fd in self.channels:
            self._watch(channel)
            if not self.accepting and channel.idle:
                self._close(channel)  # stopping: the request in flight is answered, we are done

    def _wait_over(self, channel: Channel, then, now: float) -> None:
        """A Wait has run its time: its continuation's reply first, then the queued actions; reading
        resumes (``_watch``), and a wait never counts as idle time."""
        channel.held = False
        channel.last_seen = now
        if then is not None:
            try:
                actions = as_actions(then())
            except Exception as exc:  # a service bug must cost one connection, not the server
                self.server.log.error(f"service failed: {exc!r}")
                self._close(channel)
                return
            channel.outbox.extendleft(reversed(actions))
            channel.queued += sum(len(action.data) for action in actions if type(action) is Send)
        self._pump(channel, now)

    def _send_file(self, channel: Channel) -> bool:
        """Zero-copy send of the current file; True once it is all sent."""
        action = channel.file
        offset, remaining = action.offset, action.count
        try:
            while remaining:
                sent = os.sendfile(channel.fd, action.file.fileno(), offset, min(remaining, 1 << 30))
                if sent == 0:
                    raise ConnectionError("file shrank while being sent")
                offset += sent
                remaining -= sent
        except BlockingIOError:
            channel.file = SendFile(action.file, offset, remaining)
            return False
        except BaseException:
            action.file.close()
            channel.file = None
            raise
        action.file.close()
        channel.file = None
        return True

    def _half_close(self, channel: Channel, now: float) -> None:
        """FIN now, close when the peer's FIN arrives or after a short linger (no RST on our reply)."""
        channel.outbox.clear()
        channel.queued = 0
        channel.closing = True
        channel.linger_until = now + LINGER_SECONDS
        try:
            channel.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(channel)

    def _watch(self, channel: Channel) -> None:
        if channel.mirrors:
            if channel.closing or not channel.idle:
                self.mirroring.pop(channel.fd, None)
            else:
                self.mirroring[channel.fd] = channel
        wants_write = bool(channel.buffer) or channel.file is not None
        backed_up = (len(channel.buffer) + channel.queued > HIGH_WATER
                     or len(channel.outbox) > MAX_QUEUED_ACTIONS)
        # Not read while backed up, nor while a Wait is pending (actions.Wait); always while closing.
        mask = (WRITE if wants_write else 0) | (0 if (backed_up or channel.held) and not channel.closing else READ)
        if mask == channel.mask:
            return
        if not mask:
            self.poller.unregister(channel.fd)  # nothing to wait for until a timer fires
        elif not channel.mask:
            self.poller.register(channel.fd, mask)
        else:
            self.poller.modify(channel.fd, mask)
        channel.mask = mask

    def _close(self, channel: Channel) -> None:
        if self.channels.pop(channel.fd, None) is None:
            return
        self.mirroring.pop(channel.fd, None)
        if channel.mask:
            self.poller.unregister(channel.fd)  # unregister before close: the fd may be reused
        if channel.file is not None:
            channel.file.file.close()
        for action in channel.outbox:
            if type(action) is SendFile:
                action.file.close()
        channel.sock.close()
        try:
            channel.conn.close()
        except Exception as exc:
            self.server.log.error(f"service close failed: {exc!r}")

    # -- time-driven work ------------------------------------------------------------------------
    def _sweep(self, now: float) -> None:
        idle_limit = self.server.limits.idle_timeout
        request_limit = self.server.limits.request_timeout
        for channel in list(self.channels.values()):
            if channel.closing and now >= channel.linger_until:
                self._close(channel)
            elif channel.request_began and now - channel.request_began > request_limit:
                self._close(channel)  # trickling a request: the deadline is absolute
            elif now - channel.last_seen > idle_limit and not channel.held:
                self._close(channel)  # idle, or a reader that stopped reading: both time out
        if not self.accepting and now >= self.drain_deadline:
            for channel in list(self.channels.values()):
                self._close(channel)
        if self.muted_until and now >= self.muted_until:
            self.muted_until = 0.0
            for listener in self.listeners.values():
                self.poller.register(listener.fileno(), READ)

    def _mute_listeners(self, until: float) -> None:
        if self.muted_until:
            return
        self.muted_until = until
        for listener in self.listeners.values():
            self.poller.unregister(listener.fileno())

    def _begin_stop(self, now: float) -> None:
        self.accepting = False
        self.drain_deadline = now + self.server.limits.drain_seconds
        for fd, listener in list(self.listeners.items()):
            if not self.muted_until:
                self.poller.unregister(listener.fileno())
            listener.close()
            del self.listeners[fd]
        for channel in list(self.channels.values()):
            if channel.idle and not channel.closing:
                self._close(channel)


def serve(server: Server) -> None:
    SelectServer(server).run()
