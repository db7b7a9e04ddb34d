"""The echo service: the chapter's ``Echo=>`` replies, written once for every server model.

Framing, three ways:
* default -- Example 10-1 exactly: each chunk received is answered at once with ``Echo=>`` + that
  chunk, nothing added. The chapter's clients send a message with no newline and wait for its
  echo, so there is nothing to frame by; TCP decides what a chunk is, as for the chapter's server.
* ``lines`` -- each ``\\n``-terminated line is one message and gets one ``Echo=>...\\n`` reply,
  however TCP cuts or joins them; a last line without a newline is answered when the client closes.
* ``raw`` -- RFC 862: bytes come back unchanged, chunk by chunk, for benchmarks and outside tools.

Timing: ``delay`` is the chapter's: one wait per connection, before anything is read (its servers'
``time.sleep(5)`` ahead of their ``recv`` loop). No input reaches the service while a Wait runs
(``actions.Wait``), so every reply -- and its `` at <server time>`` stamp -- is made when it is
sent. ``delay_each`` waits before every reply instead (each chunk, or each line), the reply again
made when the wait is over (``Wait.then``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sockkit.services.actions import CLOSE, Action, Peer, Reply, Send, Wait
from sockkit.services.line_memory import LineMemoryFull, LinePool
from sockkit.services.lines import LineBuffer, LineTooLong

PREFIX = b"Echo=>"
#: What a client past --max-connections is told before the server closes (not under --raw: no prefix).
BUSY = PREFIX + b"server busy, try again later\n"
DEFAULT_PORT = 50007
#: Longest line mode accepts; far above any message a person types, small enough that a client
#: sending no newline cannot grow the server by more than this.
MAX_LINE = 1 << 20


@dataclass(frozen=True)
class EchoService:
    """Settings shared by every echo connection of one server."""

    raw: bool = False
    #: One reply per ``\\n``-terminated line instead of one per chunk received.
    lines: bool = False
    #: Seconds each connection waits before its first read (the chapter's servers: 5).
    delay: float = 0.0
    #: Seconds waited before each reply.
    delay_each: float = 0.0
    #: Returns the server's time as text (the chapter's ``time.ctime()``); None: no stamp.
    stamp: Callable[[], str] | None = None
    max_line: int = MAX_LINE
    #: Where every connection's unfinished line is counted server-wide (``line_memory``); None: only
    #: ``max_line`` bounds each.
    line_pool: LinePool | None = None
    name: str = "echo"

    def connect(self, peer: Peer) -> RawEcho | ChunkEcho | LineEcho:
        if self.raw:
            return RawEcho(self)
        return LineEcho(self) if self.lines else ChunkEcho(self)

    def busy_reply(self) -> bytes:
        return b"" if self.raw else BUSY

    def opening(self) -> list[Action]:
        """What every connection does first: the chapter's one wait, if any."""
        return [Wait(self.delay)] if self.delay else []

    def stamped(self, echoed: bytes, end: bytes = b"") -> bytes:
        """``Echo=>`` + ``echoed`` (+ `` at <server time>``, read now) + ``end``."""
        if self.stamp is None:
            return PREFIX + echoed + end
        return PREFIX + echoed + b" at " + self.stamp().encode() + end


class RawEcho:
    """Bytes back exactly as they came."""

    __slots__ = ("delay_each", "mirrors", "service")

    def __init__(self, service: EchoService) -> None:
        self.service = service
        self.delay_each = service.delay_each
        # Every reply is the chunk itself (see ``Connection.mirrors``); not claimed with a delay,
        # so a model never has to order a shortcut against a Wait.
        self.mirrors = not (service.delay or service.delay_each)

    def start(self) -> list[Action]:
        return self.service.opening()

    def receive(self, data: bytes) -> Reply:
        if not data:
            return [CLOSE]
        if self.delay_each:
            return [Wait(self.delay_each), Send(data)]
        return data

    def close(self) -> None:
        pass

    def pending_request(self) -> bool:
        return False


class ChunkEcho:
    """Example 10-1: ``Echo=>`` + each chunk received, at once (`` at <server time>`` when stamping)."""

    __slots__ = ("service",)

    def __init__(self, service: EchoService) -> None:
        self.service = service

    def start(self) -> list[Action]:
        return self.service.opening()

    def receive(self, data: bytes) -> Reply:
        if not data:
            return [CLOSE]
        service = self.service
        if service.delay_each:
            return [Wait(service.delay_each, then=lambda: service.stamped(data))]
        return service.stamped(data)

    def close(self) -> None:
        pass

    def pending_request(self) -> bool:
        return False  # every chunk is a whole request


class LineEcho:
    """``--lines``: ``Echo=>`` + each line (+ `` at <server time>``) + newline."""

    __slots__ = ("lines", "service")

    def __init__(self, service: EchoService) -> None:
        self.service = service
        pool = service.line_pool
        self.lines = LineBuffer(service.max_line, pool.holding() if pool is not None else None)

    def start(self) -> list[Action]:
        return self.service.opening()

    def receive(self, data: bytes) -> Reply:
        if not data:
            tail = self.lines.pending()
            return [*self._answer([tail]), CLOSE] if tail else [CLOSE]
        try:
            messages = self.lines.feed(data)
        except (LineTooLong, LineMemoryFull) as exc:
            return [Send(PREFIX + b"error: " + str(exc).encode() + b"\n"), CLOSE]
        if not messages:
            return []
        if not self.service.delay_each:
            return self._reply(messages)
        return self._answer(messages)

    def _reply(self, messages: list[bytes]) -> bytes:
        # One reply for a whole batch: one syscall however many lines a segment carried.
        stamped = self.service.stamped
        return b"".join(stamped(message.rstrip(b"\r"), b"\n") for message in messages)

    def _answer(self, messages: list[bytes]) -> list[Action]:
        delay = self.service.delay_each
        if not delay:
            return [Send(self._reply(messages))]
        return [Wait(delay, then=lambda message=message: self._reply([message])) for message in messages]

    def pending_request(self) -> bool:
        return self.lines.holding

    def close(self) -> None:
        self.lines.close()  # gives back what the line held of the server's pool
