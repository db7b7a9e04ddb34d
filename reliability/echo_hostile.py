"""Echo line-mode scenarios from issue 16 (hostile clients): trickled long lines, line memory.

Each runs a real ``sockkit serve echo`` in line mode under one model and measures the server's
own CPU and memory (the whole process tree, so fork and prefork count every process).
"""

from __future__ import annotations

import socket
import time

from reliability.model_scenarios import MODELS, connect, serve
from reliability.probes import snapshot
from reliability.suite import Row, Scale, scenario

#: The options that put the echo service in line mode (one Echo=> reply per line).
LINE_MODE: tuple[str, ...] = ("--lines",)


def _quarters(port: int, server, size: int = (1 << 20) - 200, piece: int = 100,
              pause: float = 0.0002) -> tuple[float, float]:
    """Server CPU seconds spent on the first and on the last quarter of one ``size``-byte line
    sent in ``piece``-byte writes, ``pause`` apart (unpaced, the writes pile up and the server
    reads them in large chunks). A linear buffer costs the same for each quarter; one that
    re-joins and re-scans its whole tail on every piece costs seven times more for the last."""
    count = size // piece
    marks = {count // 4: "first", 3 * count // 4: "last"}
    cpu = {}
    with connect(port, timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        chunk = b"t" * piece
        before = snapshot(server)["cpu"]
        for index in range(count):
            if index in marks:
                cpu[marks[index]] = snapshot(server)["cpu"]
            sock.sendall(chunk)
            time.sleep(pause)
        sock.sendall(b"\n")
        want = len(b"Echo=>") + count * piece + 1
        got = 0
        while got < want:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"server closed after {got} of {want} reply bytes")
            got += len(data)
        end = snapshot(server)["cpu"]  # still connected: a fork model's child is still there
    return cpu["first"] - before, end - cpu["last"]


@scenario("trickled-line", "a line just under 1 MiB trickled in 100-byte writes costs the server the same CPU for "
          "its last quarter as for its first (< 2.5x; a buffer re-scanning its tail: ~5-7x)", MODELS)
def trickled_line(model: str, scale: Scale) -> Row:
    with serve(model, *LINE_MODE) as server:
        first, last = _quarters(server.port, server)
    ratio = last / max(first, 0.01)  # CPU is counted in 10 ms ticks
    return Row("trickled-line", model, f"server CPU for the first quarter {first * 1000:.0f} ms, for the last "
                                       f"{last * 1000:.0f} ms: {ratio:.1f}x", ratio < 2.5)
