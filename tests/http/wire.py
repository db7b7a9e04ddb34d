"""Talking HTTP to a connection with no sockets: requests written by h11's client side, the
server's actions carried out by hand (a SendFile read from its file), answers parsed by h11."""

from __future__ import annotations

import os
from dataclasses import dataclass

import h11

from sockkit.services.actions import Close, Send, SendFile, as_actions


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def carry_out(actions) -> tuple[bytes, bool]:
    """What the actions put on the wire, and whether they closed the connection."""
    out = bytearray()
    closed = False
    for action in as_actions(actions):
        if type(action) is Send:
            out += action.data
        elif type(action) is SendFile:
            try:
                out += os.pread(action.file.fileno(), action.count, action.offset)
            finally:
                action.file.close()
        elif type(action) is Close:
            closed = True
    return bytes(out), closed


class Client:
    """One HTTP client's view of a server connection (``conn``), request by request."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.h11 = h11.Connection(h11.CLIENT)
        self.closed = False

    def request(self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"",
                chunks: int = 1) -> Reply:
        fields = [("Host", "127.0.0.1:8000"), *(headers or {}).items()]
        if body or method in ("PUT", "POST"):
            fields.append(("Content-Length", str(len(body))))
        data = self.h11.send(h11.Request(method=method, target=target.encode(), headers=fields))
        if body:
            data += self.h11.send(h11.Data(data=body))
        data += self.h11.send(h11.EndOfMessage())
        return self.raw(data, chunks)

    def raw(self, data: bytes, chunks: int = 1) -> Reply:
        """Feed ``data`` (in ``chunks`` pieces) and read one answer."""
        out = bytearray()
        step = max(1, -(-len(data) // chunks))
        for start in range(0, len(data), step):
            sent, closed = carry_out(self.conn.receive(data[start:start + step]))
            out += sent
            self.closed |= closed
        return self.read(bytes(out))

    def read(self, out: bytes) -> Reply:
        self.h11.receive_data(out)
        if self.closed:
            self.h11.receive_data(b"")
        response, body = None, bytearray()
        while True:
            event = self.h11.next_event()
            if type(event) in (h11.Response, h11.InformationalResponse):
                if event.status_code >= 200:
                    response = event
            elif type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                break
            else:
                raise AssertionError(f"incomplete answer: {event!r} after {out[:300]!r}")
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        headers: dict[str, str] = {}
        for name, value in response.headers:
            key, text = name.decode().lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return Reply(response.status_code, headers, bytes(body))


def status_of(raw_answer: bytes) -> int:
    """The status code of the first answer in raw bytes (for requests h11's client would not write)."""
    line = raw_answer.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 "), raw_answer[:200]
    return int(line.split()[1])
