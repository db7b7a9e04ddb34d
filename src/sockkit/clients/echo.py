"""The chapter's echo client: one message per argument, one reply printed per message.

Three ways to know where a reply ends, one per server framing (``serve echo``'s options):
* default -- as Example 10-2: the message goes out with no newline, and the reply is ``Echo=>`` +
  that message + whatever the server adds (`` at <server time>`` from the chapter's stamped
  servers, Examples 10-4..10-9). Such a reply carries no end marker, and the chapter's client
  trusted one ``recv(1024)`` to hold it whole. Here a reply runs until the next one begins: once the
  echo of a message has arrived, the next message goes out (as the chapter's client sends it after
  its ``recv``), and the bytes before that message's ``Echo=>`` close the reply, however TCP split
  or joined them. The last reply is what came with its echo, plus the rest of a `` at <time>``
  stamp it began or that the replies before it had: the end of the stream cannot mark it, since
  the chapter's forking servers keep the client's socket open in their parent after the child has
  answered. (So a lone message whose stamp TCP sends apart from its echo loses that stamp -- as the
  chapter's own client, which reads once, would.)
* ``lines`` -- ``serve echo --lines``: each message is sent as a line, each reply is a line.
* ``raw`` -- ``serve echo --raw``: the reply is the message's bytes, exactly.

A server started with ``--lines`` never answers a message sent the chapter's way (it waits for a
newline), and nothing the client could add would stay unseen by the chapter's own servers. So the
default mode only says so early: ``on_silence`` is called once if the first reply has not begun
after ``SILENCE_HINT`` seconds -- past the chapter's servers' one 5 s sleep -- and the wait goes on
to the timeout.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterable, Iterator

from sockkit.clients.connect import connect
from sockkit.services.echo import BUSY

PREFIX = b"Echo=>"
#: `` at `` + ``time.ctime()``: what the chapter's stamped servers (and ``serve echo --stamp``) add.
STAMP_HEAD, STAMP_LENGTH = b" at ", len(b" at ") + len("Sun Jun 18 22:52:52 2000")
#: Most bytes one reply may hold before we give up on finding its end (no server of ours comes near).
MAX_REPLY = 1 << 24
#: Seconds of silence before the first reply after which ``on_silence`` is told (the chapter's servers
#: sleep 5 s before their first read).
SILENCE_HINT = 6.0


class ReplyError(ConnectionError):
    """The server closed or misbehaved before a whole reply arrived."""


class ReplyReader:
    """Reads whole replies from a socket, keeping whatever arrived beyond the current one."""

    def __init__(self, sock: socket.socket, on_silence: Callable[[float], None] | None = None) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.ended = False
        #: Told once, with the seconds waited, if the first read waits past SILENCE_HINT.
        self.on_silence = on_silence

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            self._more_or_fail()
        return self.take(end + 1)[:-1]

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._more_or_fail()
        return self.take(count)

    def echo_of(self, payload: bytes, after: int) -> int:
        """Wait until ``Echo=>`` + ``payload`` has arrived, its ``Echo=>`` at ``after`` or later;
        where that reply starts. ``after`` is the least length of the reply before it."""
        while True:
            start = self.buffer.find(PREFIX, after)
            if start >= 0 and len(self.buffer) - start >= len(PREFIX) + len(payload):
                return start
            if start < 0 and after == 0 and len(self.buffer) >= len(PREFIX):
                shown = bytes(self.buffer[:40])
                raise ReplyError(f"the reply {shown!r} does not start with 'Echo=>' (a raw echo server? use --raw)")
            self._more_or_fail()

    def last(self, echoed: int, stamped: bool) -> bytes:
        """The last reply, whose first ``echoed`` bytes (its echo) are here: with what came along, and
        the rest of a time stamp begun, or expected (``stamped``), or what there is when the server closes."""
        while not self.ended:
            extra = self.buffer[echoed:echoed + STAMP_LENGTH]
            if (not extra and not stamped) or len(extra) == STAMP_LENGTH or \
                    not STAMP_HEAD.startswith(extra[:len(STAMP_HEAD)]):
                break
            self._more()
        return self.take(len(self.buffer))

    def take(self, count: int) -> bytes:
        reply = bytes(self.buffer[:count])
        del self.buffer[:count]
        return reply

    def _more_or_fail(self) -> None:
        if len(self.buffer) > MAX_REPLY:
            raise ReplyError(f"a reply longer than {MAX_REPLY} bytes never ended")
        self._more()
        if self.ended:
            raise ReplyError("server closed the connection before replying in full")

    def _more(self) -> None:
        chunk = self._first_recv() if self.on_silence is not None else self.sock.recv(1 << 16)
        if not chunk:
            self.ended = True
        self.buffer += chunk


    def _first_recv(self) -> bytes:
        """The first read, in two parts: up to SILENCE_HINT, then (having said so) the rest of the timeout."""
        tell, self.on_silence = self.on_silence, None
        timeout = self.sock.gettimeout()
        if timeout is not None and timeout <= SILENCE_HINT:
            return self.sock.recv(1 << 16)
        began = time.monotonic()
        self.sock.settimeout(SILENCE_HINT)
        try:
            return self.sock.recv(1 << 16)
        except TimeoutError:
            waited = time.monotonic() - began
            tell(waited)
            self.sock.settimeout(None if timeout is None else max(timeout - waited, 0.001))
            return self.sock.recv(1 << 16)
        finally:
            self.sock.settimeout(timeout)


def exchange(host: str, port: int, messages: Iterable[str], raw: bool = False, lines: bool = False,
             timeout: float | None = 30.0, on_silence: Callable[[float], None] | None = None) -> Iterator[str]:
    """Send each message and yield the server's reply to it, as text (see the module doc);
    ``on_silence(seconds)``: see the module doc (the default mode only)."""
    with connect(host, port, timeout) as sock:
        reader = ReplyReader(sock, None if raw or lines else on_silence)
        if raw or lines:
            for message in messages:
                payload = message.encode()
                sock.sendall(payload if raw else payload + b"\n")
                reply = reader.exactly(len(payload)) if raw else reader.line().rstrip(b"\r")
                yield reply.decode(errors="backslashreplace")
            _done_sending(sock)
            return
        yield from _chunk_replies(sock, reader, messages)


def _chunk_replies(sock: socket.socket, reader: ReplyReader, messages: Iterable[str]) -> Iterator[str]:
    payloads = [message.encode() for message in messages]
    if not all(payloads):
        raise ValueError("an empty message cannot be sent without --lines: TCP carries no empty message")
    shortest = 0  # the least length of the reply not yet yielded (0: none is waiting)
    stamped = False  # the replies so far ended in `` at <time>``
    for payload in payloads:
        if shortest and reader.buffer == BUSY:
            break  # turned away (--max-connections): the server closes; a next message would meet a reset
        sock.sendall(payload)
        start = reader.echo_of(payload, shortest)
        if shortest:
            reply = reader.take(start)
            stamped = len(reply) == shortest + STAMP_LENGTH and reply[shortest:].startswith(STAMP_HEAD)
            yield reply.decode(errors="backslashreplace")
        shortest = len(PREFIX) + len(payload)
    if shortest:
        yield reader.last(shortest, stamped).decode(errors="backslashreplace")
    _done_sending(sock)


def _done_sending(sock: socket.socket) -> None:
    """Half-close, as the chapter's client's close does; a server that closed first (a busy one) is
    no error: every reply is in already."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
