"""A scripted getfile v1 server on loopback, honest or hostile, for the client's tests.

It serves an in-memory dict of files and can be told to misbehave in exactly one way per test
(``faults``): short or long bodies, a flipped byte, a wrong digest, absurd sizes, stalls, errors,
hostile listings. It is threaded and bounded: every connection thread ends when the client goes
or the server is stopped, and ``stop()`` joins them all.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import xxhash

from sockkit.protocols import getfile as wire


def digest_of(data: bytes) -> str:
    return f"{wire.DIGEST_ALGORITHM}:{xxhash.xxh3_128(data).hexdigest()}"


@dataclass
class Faults:
    """How to misbehave. Every field off by default: an honest server."""

    short_body: int = 0           # send this many bytes fewer than announced, then close
    extra_bytes: bytes = b""      # send these after the body
    flip_byte: int | None = None  # flip the byte at this offset of the file
    wrong_digest: bool = False
    size_override: int | None = None   # announce this size (and send the real bytes)
    stall_after: int | None = None     # send this many body bytes, then go silent until stopped
    stall_before_header: bool = False
    error: tuple[str, str] | None = None    # answer every GET1 with ERR1 CODE MESSAGE
    tree: Iterable[str] | None = None       # raw listing lines for TREE1 (hostile paths; any iterable)
    tree_count: int | None = None           # the count TREE1 announces (default: len(tree))
    tree_pause: float = 0.0                 # seconds between TREE1 lines (a trickled listing)
    close_without_answer: bool = False
    ignore_version: bool = False      # always answer from offset 0 (as if the file changed)
    resume_anyway: bool = False       # resume at the asked offset even when the version differs
    put_fails_after: int | None = None  # PUT1: answer ERR1 no-space after this many body bytes, then close


@dataclass
class FakeServer:
    files: dict[str, bytes]
    faults: Faults = field(default_factory=Faults)
    token: str | None = None
    uploads: dict[str, bytes] = field(default_factory=dict)
    requests: list[bytes] = field(default_factory=list)
    legacy: bool = False   # speak the chapter's protocol: path line -> raw bytes -> close
    on_request: Callable[[bytes], None] | None = None
    tls: ssl.SSLContext | None = None  # wrap every accepted connection (server side)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.connections: list[socket.socket] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.acceptor.join(5)
        for conn in list(self.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(5)
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            if self.tls is not None:
                try:
                    conn.settimeout(5)
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            conn.settimeout(0.1)
            self.connections.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    # -- one connection ---------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray()
        try:
            while not self.stopping.is_set():
                line = self._line(conn, buffer)
                if line is None:
                    return
                self.requests.append(line)
                if self.on_request is not None:
                    self.on_request(line)
                if self.legacy:
                    data = self.files.get(line.decode(errors="replace"))
                    if data is not None:
                        conn.sendall(data)
                    return
                if not self._answer(conn, wire.parse_request(line), buffer):
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _line(self, conn: socket.socket, buffer: bytearray) -> bytes | None:
        while b"\n" not in buffer:
            chunk = self._recv(conn)
            if not chunk:
                return None
            buffer += chunk
        end = buffer.index(b"\n")
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        return line

    def _recv(self, conn: socket.socket, size: int = 65536) -> bytes:
        while not self.stopping.is_set():
            try:
                return conn.recv(size)
            except TimeoutError:
                continue
        return b""

    def _stall(self) -> None:
        self.stopping.wait(30)

    def _answer(self, conn: socket.socket, request: wire.Request, buffer: bytearray) -> bool:
        """Answer one request; False to close the connection."""
        faults = self.faults
        if isinstance(request, wire.Auth):
            if request.token == self.token:
                conn.sendall(wire.format_count(0))
                return True
            conn.sendall(wire.format_error(wire.ErrorCode.AUTH_REQUIRED, "bad token"))
            return False
        if isinstance(request, wire.Get):
            return self._get(conn, request, faults)
        if isinstance(request, wire.List | wire.Tree):
            return self._listing(conn, request, faults)
        if isinstance(request, wire.Put):
            if request.path in self.files and not request.overwrite:
                conn.sendall(wire.format_error(wire.ErrorCode.EXISTS, "exists"))
                return True
            conn.sendall(wire.format_count(0))
            data = bytearray(buffer)
            buffer.clear()
            while len(data) < request.size:
                if faults.put_fails_after is not None and len(data) >= faults.put_fails_after:
                    conn.sendall(wire.format_error(wire.ErrorCode.NO_SPACE, "disk full"))
                    return False
                chunk = self._recv(conn)
                if not chunk:
                    return False
                data += chunk
            if digest_of(bytes(data[: request.size])) != request.digest:
                conn.sendall(wire.format_error(wire.ErrorCode.CORRUPT, "digest mismatch"))
                return True
            self.uploads[request.path] = bytes(data[: request.size])
            conn.sendall(wire.format_count(request.size))
            return True
        conn.sendall(wire.format_error(wire.ErrorCode.BAD_REQUEST, "what?"))
        return False

    def _get(self, conn: socket.socket, request: wire.Get, faults: Faults) -> bool:
        if faults.close_without_answer:
            return False
        if faults.stall_before_header:
            self._stall()
            return False
        if faults.error is not None:
            code, message = faults.error
            conn.sendall(wire.format_error(wire.ErrorCode(code), message))
            return wire.ErrorCode(code) not in wire.FATAL
        data = self.files.get(request.path)
        if data is None:
            conn.sendall(wire.format_error(wire.ErrorCode.NOT_FOUND, "no such file"))
            return True
        digest = digest_of(data)
        offset = request.offset if request.version == digest or request.version is None else 0
        if faults.resume_anyway:
            offset = request.offset
        if faults.ignore_version:
            offset = 0
        offset = min(offset, len(data))
        body = bytearray(data[offset:])
        if faults.flip_byte is not None and faults.flip_byte - offset in range(len(body)):
            body[faults.flip_byte - offset] ^= 0xFF
        size = faults.size_override if faults.size_override is not None else len(data)
        header = wire.FileHeader(size, offset, 1_700_000_000_000_000_000,
                                 "xxh3-128:" + "0" * 32 if faults.wrong_digest else digest)
        conn.sendall(wire.format_header(header))
        if faults.stall_after is not None:
            conn.sendall(bytes(body[: faults.stall_after]))
            self._stall()
            return False
        if faults.short_body:
            conn.sendall(bytes(body[: max(0, len(body) - faults.short_body)]))
            return False
        conn.sendall(bytes(body) + faults.extra_bytes)
        return not faults.extra_bytes

    def _listing(self, conn: socket.socket, request: wire.List | wire.Tree, faults: Faults) -> bool:
        if isinstance(request, wire.Tree) and faults.tree is not None:
            count = faults.tree_count if faults.tree_count is not None else len(faults.tree)
            conn.sendall(wire.format_count(count))
            batch = bytearray()
            for line in faults.tree:  # streamed: a hostile listing may be far larger than memory allows
                if self.stopping.is_set():
                    return False
                batch += line.encode() + b"\n"
                if faults.tree_pause or len(batch) >= 1 << 16:
                    conn.sendall(batch)
                    batch.clear()
                    self.stopping.wait(faults.tree_pause)
            conn.sendall(batch)
            return True
        base = "" if request.path in ("", ".") else request.path.rstrip("/") + "/"
        entries = []
        dirs = set()
        for path, data in sorted(self.files.items()):
            if not path.startswith(base):
                continue
            rest = path[len(base):]
            if isinstance(request, wire.Tree):
                entries.append(wire.Entry("f", len(data), 1_700_000_000_000_000_000, rest))
            elif "/" in rest:
                dirs.add(rest.split("/", 1)[0])
            else:
                entries.append(wire.Entry("f", len(data), 1_700_000_000_000_000_000, rest))
        entries += [wire.Entry("d", 0, 1_700_000_000_000_000_000, name) for name in sorted(dirs)]
        conn.sendall(wire.format_count(len(entries)) + b"".join(wire.format_entry(e) for e in entries))
        return True
