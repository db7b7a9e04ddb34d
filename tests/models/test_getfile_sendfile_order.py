"""A file body never overtakes bytes the server has already queued (the zero-copy paths).

Under uvloop the event-loop driver sends files with os.sendfile on the transport's socket, past
the transport's own buffer. If an earlier answer (a large listing) still sits in that buffer, the
body must wait for it. A client with a tiny receive buffer that pipelines listing, file, listing,
small inline file, file and only then starts reading, then reads slowly, makes that buffer
non-empty when a file send starts (seen with a probe under uvloop; whether a missing drain would
corrupt the stream then depends on which writability callback the loop runs first, so this test
guards the order without proving the drain necessary).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import xxhash

from sockkit.protocols.getfile import Get, format_request, parse_answer, parse_header
from sockkit.protocols.getfile import List as ListDir
from sockkit.testing import running

#: Listing lines are ~230 bytes: 4,000 names make an answer far larger than any socket buffer.
NAMES = 4000
FILE_SIZE = 20 << 20


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("order")
    (base / "many").mkdir()
    for i in range(NAMES):
        (base / "many" / (f"{i:05d}" + "n" * 200)).touch()
    (base / "body.bin").write_bytes(os.urandom(FILE_SIZE))
    (base / "inline.bin").write_bytes(os.urandom(60_000))  # small enough to go inline with its header
    return base


def read_exact(sock: socket.socket, buffer: bytearray, count: int) -> bytes:
    while len(buffer) < count:
        chunk = sock.recv(1 << 16)
        assert chunk, "server closed early"
        buffer += chunk
    data = bytes(buffer[:count])
    del buffer[:count]
    return data


def read_line(sock: socket.socket, buffer: bytearray) -> bytes:
    for _ in range(100_000):  # bounded: each turn reads at least one byte or fails
        end = buffer.find(b"\n")
        if end >= 0:
            return read_exact(sock, buffer, end + 1)
        chunk = sock.recv(1 << 16)
        assert chunk, "server closed early"
        buffer += chunk
    raise AssertionError("no line")


@pytest.mark.parametrize("model", ["uvloop", "asyncio", "select", "thread"])
def test_pipelined_listing_then_file_keeps_order(model: str, root: Path) -> None:
    """Listings and file bodies pipelined to a slow reader arrive complete and in order."""
    expected = {name: "xxh3-128:" + xxhash.xxh3_128((root / name).read_bytes()).hexdigest()
                for name in ("body.bin", "inline.bin")}
    with running("getfile", "--model", model, "--port", "0", "--root", str(root)) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", server.port))
        with sock:
            requests = [ListDir("many"), Get("body.bin"), ListDir("many"), Get("inline.bin"), Get("body.bin")]
            sock.sendall(b"".join(format_request(r) for r in requests))
            time.sleep(0.5)  # let the server fill the socket and queue the rest behind it
            buffer = bytearray()
            for request in requests:
                fields = parse_answer(read_line(sock, buffer))
                assert isinstance(fields, list), fields
                if isinstance(request, ListDir):
                    assert int(fields[0]) == NAMES
                    for _ in range(NAMES):
                        assert read_line(sock, buffer).startswith(b"f 0 ")
                else:
                    header = parse_header(fields)
                    body = read_exact(sock, buffer, header.remaining)
                    assert header.digest == expected[request.path]
                    assert "xxh3-128:" + xxhash.xxh3_128(body).hexdigest() == expected[request.path]
                time.sleep(0.2)  # a slow reader: the server's next answers queue up meanwhile
