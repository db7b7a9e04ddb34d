"""Echo line-mode scenarios from issue 16 (hostile clients): trickled long lines, line memory.

Each runs a real ``sockkit serve echo`` in line mode under one model and measures the server's
own CPU and memory (the whole process tree, so fork and prefork count every process).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import subprocess
import time

from reliability.model_scenarios import MODELS, connect, serve
from reliability.probes import pss_mib, round_trip, snapshot
from reliability.suite import Row, Scale, scenario, skip

#: The options that put the echo service in line mode (one Echo=> reply per line).
LINE_MODE: tuple[str, ...] = ("--lines",)


def _paced_cpu(port: int, server, pieces: int, piece: bytes, pause: float = 0.0002) -> float:
    """Server CPU seconds per write for ``pieces`` writes of ``piece``, ``pause`` apart (unpaced,
    writes pile up and the server reads them in large chunks), then a newline; measured once the
    last reply is in, while the connection (and a fork model's child) is still there."""
    with connect(port, timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        before = snapshot(server)["cpu"]
        for _ in range(pieces):
            sock.sendall(piece)
            time.sleep(pause)
        sock.sendall(b"\n")
        replies = pieces if piece.endswith(b"\n") else 0
        want = len(b"Echo=>") * (replies + 1) + pieces * len(piece) + 1
        got = 0
        while got < want:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"server closed after {got} of {want} reply bytes")
            got += len(data)
        return (snapshot(server)["cpu"] - before) / pieces


@scenario("trickled-line", "a line just under 1 MiB trickled in 100-byte writes costs the server per write no "
          "more than three times what 100-byte lines, each answered, cost per line (0.6-2.0x measured, 2.0 under a "
          "loaded make test; a buffer re-scanning its whole tail on every piece: 4.9-19.9x; issue 16: 420x the CPU "
          "of the line sent at once)", MODELS)
def trickled_line(model: str, scale: Scale) -> Row:
    with serve(model, *LINE_MODE) as server:
        lines = _paced_cpu(server.port, server, 10_480, b"l" * 99 + b"\n")
        trickled = _paced_cpu(server.port, server, 10_480, b"t" * 100)
    ratio = trickled / max(lines, 1e-6)
    return Row("trickled-line", model, f"server CPU per 100-byte write: {trickled * 1e6:.0f} us into one ~1 MiB "
                                       f"line, {lines * 1e6:.0f} us as whole answered lines: {ratio:.1f}x", ratio < 3)


def _unread(port: int) -> int:
    """Bytes waiting, unread, in the server's sockets on ``port`` (``ss``'s Recv-Q)."""
    out = subprocess.run(["ss", "-tnH", f"( sport = :{port} )"], capture_output=True, text=True).stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if len(line.split()) > 1)


def _drained(port: int, seconds: float = 30.0) -> bool:
    """Until the server has read everything sent to it (bounded)."""
    deadline = time.monotonic() + seconds
    while _unread(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _unread(port)


def _settled(server, connections: int, seconds: float = 15.0) -> None:
    """Until the server holds ``connections`` connections and, for the fork models, no more
    children than that (bounded): a refused client's thread or process is gone, not lingering."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-tnH", f"( sport = :{server.port} )"], capture_output=True, text=True).stdout
        if len(out.splitlines()) <= connections and snapshot(server)["children"] <= connections + 4:
            return
        time.sleep(0.1)


def _told_busy(socks: list[socket.socket], wait: float = 0.5) -> list[socket.socket]:
    """The sockets the server has answered 'server busy' on (it answers before it reads on, so
    by the time everything was read every refusal is there: one short wait for all of them)."""
    told = []
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        for key, _ in selector.select(wait):
            sock = key.fileobj
            sock.settimeout(0.5)
            with contextlib.suppress(OSError):
                if b"server busy" in sock.recv(4096):
                    told.append(sock)
    return told


#: Allocator slack a server may keep after the attack: glibc keeps up to 4 MiB of freed heap per
#: arena at its top (``procs.TRIM_THRESHOLD_BYTES``), and a forked child that held a long line keeps
#: its own. A thread per connection (``thread``, ``socketserver``) spreads 256 clients' buffers over
#: up to 16 arenas, whose freed heap stays fragmented below their tops: 62-110 MiB measured run to
#: run here (issue 16's code: 271-549 MiB, ~1 MiB per client), so those two get twice the slack.
SLACK_MIB = 64
THREAD_SLACK_MIB = 128


@scenario("line-memory", "256 clients (long: 1,024) each send an unfinished line just under 1 MiB (--lines, "
          "--line-memory 8 MiB): the server's memory, less what the connections still open cost idle, is at most "
          "256 x 64 KiB + 8 MiB (+64 MiB allocator slack, 128 with a thread per client; before: ~1 MiB per "
          "client); those past the pool are told 'server busy' and closed; a canary is answered", MODELS)
def line_memory(model: str, scale: Scale) -> Row:
    if model in ("sequential", "pool"):
        return skip("line-memory", model, "serves one client (sequential) or --workers clients (pool) at a time")
    clients = scale.pick(256, 1024)
    pool = 8 << 20
    with serve(model, *LINE_MODE, "--line-memory", str(pool), "--max-connections", str(clients + 16),
               "--idle-timeout", "120") as server:
        empty = pss_mib(server)
        socks = [connect(server.port, timeout=30) for _ in range(clients)]
        try:
            for sock in socks:
                sock.sendall(b"x")  # every connection holds a line (and, under fork, has its process)
            _drained(server.port)
            per_connection = (pss_mib(server) - empty) / clients
            payload = b"y" * ((1 << 20) - 2)
            for sock in socks:
                with contextlib.suppress(OSError):  # refused ones are closed under us
                    sock.sendall(payload)
            drained = _drained(server.port)
            refused = _told_busy(socks)
            for sock in refused:
                sock.close()
            busy = len(refused)
            _settled(server, clients - busy)  # the refused ones' threads or processes have gone
            after = pss_mib(server)
            with connect(server.port) as canary:
                answered = round_trip(canary, b"canary\n") < 5
        finally:
            for sock in socks:
                sock.close()
    # What the lines hold: the memory after, less what the connections still open cost when idle
    # (a thread, or under fork a whole process, per connection; the refused ones' are gone).
    growth = after - empty - per_connection * (clients - busy)
    bound = (clients * 64 / 1024) + (pool >> 20)
    slack = THREAD_SLACK_MIB if model in ("thread", "socketserver") else SLACK_MIB
    ok = drained and growth < bound + slack and busy > 0 and answered
    return Row("line-memory", model, f"{clients} lines of ~1 MiB: the server kept {growth:.0f} MiB for them (bound "
                                     f"{bound:.0f} + {slack} MiB), {busy} told busy, canary answered {answered}",
               ok)
