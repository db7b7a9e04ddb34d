"""The echo service: the chapter's ``Echo=>`` replies, written once for every server model.

Framing (the chapter's server had none, so a long message split by TCP got one prefix per
segment): in the default *line* mode each ``\\n``-terminated line is one message and gets one
``Echo=>...\\n`` reply; a last line without a newline is answered when the client closes. In
*raw* mode (RFC 862) bytes come back unchanged, chunk by chunk, for benchmarks and outside tools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sockkit.services.actions import CLOSE, Action, Peer, Reply, Send, Wait, as_actions
from sockkit.services.lines import LineBuffer, LineTooLong

PREFIX = b"Echo=>"
DEFAULT_PORT = 50007
#: Longest line mode accepts; far above any message a person types, small enough that a client
#: sending no newline cannot grow the server by more than this.
MAX_LINE = 1 << 20


@dataclass(frozen=True)
class EchoService:
    """Settings shared by every echo connection of one server."""

    raw: bool = False
    delay: float = 0.0
    #: Returns the server's time as text (the chapter's ``time.ctime()``); None: no stamp.
    stamp: Callable[[], str] | None = None
    max_line: int = MAX_LINE
    name: str = "echo"

    def connect(self, peer: Peer) -> RawEcho | LineEcho:
        if self.raw:
            return RawEcho(self.delay)
        return LineEcho(self)

    def busy_reply(self) -> bytes:
        return b"" if self.raw else PREFIX + b"server busy, try again later\n"


class RawEcho:
    """Bytes back exactly as they came."""

    __slots__ = ("delay", "mirrors")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.mirrors = not delay  # every reply is the chunk itself: see ``Connection.mirrors``

    def start(self) -> list[Action]:
        return []

    def receive(self, data: bytes) -> Reply:
        if not data:
            return [CLOSE]
        if self.delay:
            return [Wait(self.delay), Send(data)]
        return data

    def close(self) -> None:
        pass

    def pending_request(self) -> bool:
        return False


class LineEcho:
    """``Echo=>`` + each line (+ `` at <server time>`` when stamping)."""

    __slots__ = ("lines", "service")

    def __init__(self, service: EchoService) -> None:
        self.service = service
        self.lines = LineBuffer(service.max_line)

    def start(self) -> list[Action]:
        return []

    def receive(self, data: bytes) -> Reply:
        if not data:
            tail = self.lines.pending()
            return [*as_actions(self._answer([tail])), CLOSE] if tail else [CLOSE]
        try:
            messages = self.lines.feed(data)
        except LineTooLong as exc:
            return [Send(PREFIX + b"error: " + str(exc).encode() + b"\n"), CLOSE]
        return self._answer(messages) if messages else []

    def _answer(self, messages: list[bytes]) -> Reply:
        service = self.service
        suffix = b"\n"
        if service.stamp is not None:
            suffix = b" at " + service.stamp().encode() + b"\n"
        if not service.delay:
            # One reply for a whole batch: one syscall however many lines a segment carried.
            return b"".join(PREFIX + m.rstrip(b"\r") + suffix for m in messages)
        actions: list[Action] = []
        for message in messages:
            actions.append(Wait(service.delay))
            actions.append(Send(PREFIX + message.rstrip(b"\r") + suffix))
        return actions

    def pending_request(self) -> bool:
        return self.lines.holding

    def close(self) -> None:
        pass
