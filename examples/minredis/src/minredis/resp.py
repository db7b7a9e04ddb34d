"""RESP2, the Redis protocol, as far as a server needs it: commands in, replies out. No sockets.

A command arrives as an array of bulk strings -- ``*2\r\n$3\r\nGET\r\n$4\r\nspam\r\n`` -- which is
what redis-py and redis-benchmark send, or as one inline line (``PING\r\n``), as typed into telnet.
Rule: every length read from the wire is checked against a bound before anything waits for it, so
a client announcing a huge value gets an error, not our memory.
"""

from __future__ import annotations

#: Longest value accepted (Redis allows 512 MB; an example needs far less).
MAX_BULK = 16 * 1024 * 1024
#: Most arguments in one command (Redis: 1024 * 1024).
MAX_ARGUMENTS = 1024 * 1024
#: Longest inline command or length line without its newline (Redis: 64 KiB).
MAX_LINE = 64 * 1024
#: Most bytes of one unfinished command held (Redis: client-query-buffer-limit, 1 GB).
MAX_REQUEST = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The client broke the protocol; the message says how, in Redis's words."""


class CommandReader:
    """Turns bytes, cut anywhere, into commands: each a list of its arguments as bytes."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Every command completed by ``data``; a partial one waits for the next call."""
        buffer = self.pending + data if self.pending else data
        commands = []
        position = 0
        while position < len(buffer):
            read = read_array if buffer[position] == ord("*") else read_inline
            parsed = read(buffer, position)
            if parsed is None:
                break
            command, position = parsed
            if command:
                commands.append(command)
        self.pending = buffer[position:]
        if len(self.pending) > MAX_REQUEST:
            raise ProtocolError("too big request")
        return commands


def line_end(buffer: bytes, position: int, newline: bytes = b"\r\n") -> int | None:
    """Where the line starting at ``position`` ends, or None if its end has not come yet."""
    end = buffer.find(newline, position)
    if end >= 0:
        return end
    if len(buffer) - position > MAX_LINE:
        raise ProtocolError("too big inline request")
    return None


def read_line(buffer: bytes, position: int) -> tuple[bytes, int] | None:
    """The line starting at ``position`` without its CRLF, and where the next one starts."""
    end = line_end(buffer, position)
    return None if end is None else (buffer[position:end], end + 2)


def read_inline(buffer: bytes, position: int) -> tuple[list[bytes], int] | None:
    """A command typed as one line of words (a bare LF ends it too, as telnet may send)."""
    end = line_end(buffer, position, b"\n")
    return None if end is None else (buffer[position:end].split(), end + 1)


def read_length(line: bytes, limit: int, what: str) -> int:
    try:
        length = int(line[1:])
    except ValueError:
        raise ProtocolError(f"invalid {what} length") from None
    if not 0 <= length <= limit:
        raise ProtocolError(f"invalid {what} length")
    return length


def read_array(buffer: bytes, position: int) -> tuple[list[bytes], int] | None:
    """``*N`` then N bulk strings ``$LEN`` + bytes; None until all of them are here."""
    header = read_line(buffer, position)
    if header is None:
        return None
    line, position = header
    count = read_length(line, MAX_ARGUMENTS, "multibulk")
    arguments = []
    for _ in range(count):
        header = read_line(buffer, position)
        if header is None:
            return None
        line, start = header
        if not line.startswith(b"$"):
            raise ProtocolError(f"expected '$', got '{line[:1].decode('latin-1')}'")
        end = start + read_length(line, MAX_BULK, "bulk")
        if len(buffer) < end + 2:
            return None
        if buffer[end:end + 2] != b"\r\n":
            raise ProtocolError("bulk string not followed by CRLF")
        arguments.append(buffer[start:end])
        position = end + 2
    return arguments, position


# Replies. Each is complete bytes, so a batch of them joins into one send.

OK = b"+OK\r\n"
NIL = b"$-1\r\n"


def simple(text: str) -> bytes:
    return b"+" + text.encode() + b"\r\n"


def error(text: str) -> bytes:
    return b"-ERR " + text.encode() + b"\r\n"


def integer(number: int) -> bytes:
    return b":%d\r\n" % number


def bulk(value: bytes | None) -> bytes:
    return NIL if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def array(values: list[bytes | None]) -> bytes:
    return b"*%d\r\n" % len(values) + b"".join(bulk(value) for value in values)
