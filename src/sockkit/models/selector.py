"""The epoll adapter: one thread multiplexing every client's connection engine -- the chapter's select
server, fixed.

What each connection does is its engine's (models/engine.py); this file moves bytes and time:
- Never "hope it won't block": every socket is non-blocking; what a send cannot take stays in the
  engine's ``out`` and the socket is watched for writability (the chapter's own caveat, and what
  asyncio's selector transport does). Files go out with non-blocking ``os.sendfile``.
- Timers and closes refer to the ``Channel`` object, never to a descriptor number: the kernel hands
  a closed socket's number to the next client at once (a client resetting during a ``Wait`` used
  to crash this server with EBADF when its timer fired on the newcomer's number).
- The poller is ``select.epoll`` (``select.poll`` where there is none), used directly with a
  descriptor -> channel dict (the only place a number stands for a connection, kept current on
  every close): the ``selectors`` module's per-event key objects and mask translation are a
  measurable share of a 1 KiB echo (see docs/benchmarks.md).
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import socket
import time

from sockkit.lifecycle import peer_of
from sockkit.models.accept import AcceptThrottle, refuse
from sockkit.models.engine import CLOSED, Engine, open_engine, sweep_period
from sockkit.models.settings import RECV_SIZE, SENDFILE_MAX, Server
from sockkit.net import tune_accepted


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
#: Clients accepted per wake-up of a listener, so a connect storm cannot starve the others.
ACCEPTS_PER_WAKE = 64


class Channel:
    """One client: its socket, its engine, and what the poller and the timer heap know of it."""

    __slots__ = ("closed", "engine", "fd", "mask", "sock", "timer_at")

    def __init__(self, sock: socket.socket, engine: Engine) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.engine = engine
        self.mask = READ
        self.timer_at = 0.0  # the deadline a heap entry was pushed for (0: none pending)
        self.closed = False


class SelectServer:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.poller = Poller()
        self.channels: dict[int, Channel] = {}
        #: The channels of ``channels`` whose engine is ``mirroring`` (an idle raw echo): the loop hands
        #: their readable events straight to ``_mirror``. ``_sync`` keeps it current.
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
        self.sweep_seconds = sweep_period(server.limits)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        stop = self.server.stop
        for listener in self.listeners.values():
            listener.setblocking(False)
            self.poller.register(listener.fileno(), READ)
        self.poller.register(stop.fileno(), READ)
        channels, mirroring = self.channels, self.mirroring
        poll = self.poller.poll
        next_sweep = time.monotonic() + self.sweep_seconds
        try:
            while self.accepting or channels:
                timeout = max(0.0, next_sweep - time.monotonic())
                if self.timers:
                    timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
                events = poll(timeout)
                for fd, mask in events:
                    channel = mirroring.get(fd)
                    if channel is not None and mask == READ:
                        self._mirror(channel)
                        continue
                    channel = channels.get(fd)
                    if channel is None:
                        if fd in self.listeners or fd == stop.fileno():
                            self._on_listener(fd)
                        continue  # closed earlier in this batch
                    if mask == READ:  # the common case: one readable client
                        self._on_readable(channel)
                        continue
                    if mask & ERROR:
                        mask |= channel.mask  # a hang-up or error: let the read or the send find it
                    if mask & READ and channel.mask & READ:
                        self._on_readable(channel)
                    if mask & WRITE and channel.mask & WRITE and not channel.closed:
                        self._sync(channel)
                now = time.monotonic()
                while self.timers and self.timers[0][0] <= now:
                    at, _, channel = heapq.heappop(self.timers)
                    if not channel.closed and channel.timer_at == at:  # not stale, not someone else's
                        channel.timer_at = 0.0
                        channel.engine.timer(now)
                        self._sync(channel)
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + self.sweep_seconds
        finally:
            for channel in list(self.channels.values()):
                self._close(channel)
            for listener in self.listeners.values():
                listener.close()
            self.poller.close()

    def _on_listener(self, fd: int) -> None:
        stop = self.server.stop
        if fd == stop.fileno():
            stop.drain_pipe()
            if stop.stopping and self.accepting:
                self._begin_stop()
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
                    self._mute_listeners(time.monotonic() + pause)
                return
            self._admit(sock, address)

    def _admit(self, sock: socket.socket, address) -> None:
        server = self.server
        if len(self.channels) >= server.limits.max_connections:
            refuse(sock, server.service.busy_reply())
            return
        sock.setblocking(False)
        tune_accepted(sock)
        channel = Channel(sock, open_engine(server, peer_of(address), time.monotonic))
        self.channels[channel.fd] = channel
        self.poller.register(channel.fd, READ)
        self._sync(channel)

    # -- events ----------------------------------------------------------------------------------
    def _on_readable(self, channel: Channel) -> None:
        try:
            data = channel.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._fail(channel)
            return
        reply = channel.engine.received(data)
        if not reply:
            self._sync(channel)
            return
        # The hot path: one answer, nothing else pending -- try it now, as asyncio's transports do.
        try:
            sent = channel.sock.send(reply)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._fail(channel)
            return
        if sent < len(reply):
            channel.engine.keep(memoryview(reply)[sent:])
            self._sync(channel)

    def _mirror(self, channel: Channel) -> None:
        """A mirroring engine (``Connection.mirrors``, nothing pending): the chunk goes straight back
        from one reused buffer, so no bytes object is made per message (CPU per request about 6 %
        lower than ``recv`` + ``send`` here, ten-round paired A/B)."""
        inbox, sock = self.inbox, channel.sock
        try:
            count = sock.recv_into(inbox)
        except BlockingIOError:
            return
        except OSError:
            self._fail(channel)
            return
        if count:
            channel.engine.progressed = True
            try:
                sent = sock.send(inbox[:count])
            except BlockingIOError:
                sent = 0  # the client is not reading: the whole chunk waits in the engine
            except OSError:
                self._fail(channel)
                return
            if sent == count:
                return
            channel.engine.keep(inbox[sent:count])  # copied out: the buffer is reused
        else:
            channel.engine.received(b"")  # end of stream: the service says what to do
        self._sync(channel)

    def _fail(self, channel: Channel) -> None:
        """The socket failed (reset, broken pipe): this client is gone, nobody else is touched."""
        channel.engine.reset()
        self._close(channel)

    # -- carrying out the engine's wants ---------------------------------------------------------
    def _sync(self, channel: Channel) -> None:
        """Send what the engine wants until the socket or the engine has to wait, then watch for
        what it waits for: readability, writability, a timer."""
        engine, sock = channel.engine, channel.sock
        try:
            while True:
                out = engine.out
                if out:
                    engine.sent(sock.send(out))
                    if engine.out:
                        break  # the socket is full: watch for writability
                elif engine.file is not None:
                    try:
                        sent = os.sendfile(channel.fd, engine.file.file.fileno(), engine.file_offset,
                                           min(engine.file_left, SENDFILE_MAX))
                    except BlockingIOError:
                        raise
                    except OSError as exc:
                        engine.file_failed(exc)  # logged if it is the file's (EIO), silent if the socket's
                        break
                    if sent == 0:
                        raise ConnectionError("file shrank while being sent")
                    engine.file_sent(sent)
                elif engine.wants_shutdown:
                    sock.shutdown(socket.SHUT_WR)
                    engine.shut(True)
                else:
                    break
        except BlockingIOError:
            pass
        except OSError:
            engine.reset()  # a reset or broken pipe; a file that shrank
        if engine.state is CLOSED:
            self._close(channel)
            return
        if engine.mirroring:
            self.mirroring[channel.fd] = channel
        else:
            self.mirroring.pop(channel.fd, None)
        mask = (WRITE if engine.out or engine.file is not None else 0) | (READ if engine.wants_read else 0)
        if mask != channel.mask:
            if not mask:
                self.poller.unregister(channel.fd)  # nothing to wait for until a timer fires
            elif not channel.mask:
                self.poller.register(channel.fd, mask)
            else:
                self.poller.modify(channel.fd, mask)
            channel.mask = mask
        deadline = engine.deadline
        if deadline and deadline != channel.timer_at:
            channel.timer_at = deadline
            heapq.heappush(self.timers, (deadline, next(self.sequence), channel))

    def _close(self, channel: Channel) -> None:
        if channel.closed:
            return
        channel.closed = True
        if self.channels.get(channel.fd) is channel:
            del self.channels[channel.fd]
        if self.mirroring.get(channel.fd) is channel:
            del self.mirroring[channel.fd]
        if channel.mask:
            self.poller.unregister(channel.fd)  # unregister before close: the number may be reused at once
        channel.sock.close()
        channel.engine.release()

    # -- time-driven work ------------------------------------------------------------------------
    def _sweep(self, now: float) -> None:
        for channel in list(self.channels.values()):
            if channel.engine.sweep(now):
                self._sync(channel)
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

    def _begin_stop(self) -> None:
        self.accepting = False
        self.drain_deadline = time.monotonic() + self.server.limits.drain_seconds
        for fd, listener in list(self.listeners.items()):
            if not self.muted_until:
                self.poller.unregister(listener.fileno())
            listener.close()
            del self.listeners[fd]
        for channel in list(self.channels.values()):
            channel.engine.stop()
            self._sync(channel)


def serve(server: Server) -> None:
    SelectServer(server).run()
