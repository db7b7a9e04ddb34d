"""The chapter's echo client: one message per argument, one reply printed per message.

Unlike the chapter's single ``recv(1024)``, each reply is read to its end (a newline in line
mode, the message's length in raw mode), however TCP splits or joins the segments.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator

from sockkit.clients.connect import connect


class ReplyError(ConnectionError):
    """The server closed or misbehaved before a whole reply arrived."""


class ReplyReader:
    """Reads whole replies from a socket, keeping whatever arrived beyond the current one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def line(self, limit: int = 1 << 24) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            if len(self.buffer) > limit:
                raise ReplyError(f"reply longer than {limit} bytes without a newline")
            self._more()
        reply = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return reply

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._more()
        reply = bytes(self.buffer[:count])
        del self.buffer[:count]
        return reply

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ReplyError("server closed the connection before replying in full")
        self.buffer += chunk


def exchange(host: str, port: int, messages: Iterable[str], raw: bool = False,
             timeout: float | None = 30.0) -> Iterator[str]:
    """Send each message and yield the server's reply to it, as text."""
    with connect(host, port, timeout) as sock:
        reader = ReplyReader(sock)
        for message in messages:
            payload = message.encode()
            if raw:
                sock.sendall(payload)
                reply = reader.exactly(len(payload))
            else:
                sock.sendall(payload + b"\n")
                reply = reader.line().rstrip(b"\r")
            yield reply.decode(errors="backslashreplace")
        sock.shutdown(socket.SHUT_WR)
