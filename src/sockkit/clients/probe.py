"""Talk to any port, as the chapter does with POP, FTP and HTTP servers: banner, line, reply."""

from __future__ import annotations

import codecs
import socket
import time
from dataclasses import dataclass

from sockkit.clients.connect import connect

#: How long to wait for a server that speaks first (POP, FTP, SMTP) before assuming it won't.
BANNER_WAIT = 1.0


@dataclass
class ProbeResult:
    banner: bytes
    reply: bytes
    closed: bool  # the server closed the connection


def decode_escapes(text: str) -> bytes:
    """``GET /\\r\\n`` as typed on a command line -> the bytes it means."""
    return codecs.escape_decode(text.encode())[0]


def read_for(sock: socket.socket, seconds: float, limit: int) -> tuple[bytes, bool]:
    """Whatever arrives within ``seconds`` of silence, up to ``limit`` bytes; and whether EOF came."""
    data = bytearray()
    deadline = time.monotonic() + seconds
    while len(data) < limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(65536, limit - len(data)))
        except TimeoutError:
            break
        if not chunk:
            return bytes(data), True
        data += chunk
        deadline = time.monotonic() + min(seconds, 0.5)  # more may follow; stop at a pause
    return bytes(data), False


def probe(host: str, port: int, send: bytes | None, limit: int, timeout: float) -> ProbeResult:
    with connect(host, port, timeout) as sock:
        banner, closed = read_for(sock, min(BANNER_WAIT, timeout), limit)
        reply = b""
        if send is not None and not closed:
            sock.sendall(send)
            reply, closed = read_for(sock, timeout, limit)
        return ProbeResult(banner, reply, closed)


def render(data: bytes) -> str:
    """Text as text; anything binary as a hex dump."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return text.rstrip("\r\n")
    lines = []
    for start in range(0, len(data), 16):
        row = data[start : start + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{start:08x}  {row.hex(' '):<47}  {ascii_}")
    return "\n".join(lines)
