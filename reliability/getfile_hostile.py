"""getfile scenarios from issue 16 (hostile clients): a swapped upload, guessed tokens, exposure.

Each runs a real ``sockkit serve getfile`` under one model and plays the attacker with raw sockets,
so the figures are what a hostile client could do, not what sockkit's own client would try.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import xxhash

from reliability.getfile_scenarios import getfile_server
from reliability.model_scenarios import MODELS, PREFORK_WORKERS, wait_for_workers
from reliability.suite import Row, Scale, scenario, skip
from sockkit.protocols.getfile import DIGEST_ALGORITHM
from sockkit.services.getfile.root import is_reserved
from sockkit.services.getfile.throttle import BURST, REFILL
from sockkit.testing import running


def digest_of(data: bytes) -> str:
    return f"{DIGEST_ALGORITHM}:{xxhash.xxh3_128(data).hexdigest()}"


def read_line(sock: socket.socket) -> bytes:
    """One answer line (bytes until ``\\n``); b"" if the server closed first."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return line
        line += chunk
    return line


def ask(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    return read_line(sock)


def read_listing(sock: socket.socket, request: bytes) -> list[str]:
    """The paths of a LIST1/TREE1 answer (an error answer: none)."""
    head = ask(sock, request)
    if not head.startswith(b"OK1 "):
        return []
    return [read_line(sock).decode(errors="replace").rstrip("\n").split(" ", 3)[-1]
            for _ in range(int(head.split()[1]))]


def _hijack(port: int, names: list[str]) -> tuple[int, int]:
    """As client B: try to read and to overwrite each of ``names`` in inbox/.
    Returns (reads the server answered, overwrites it accepted)."""
    read = accepted = 0
    bogus = b"B's bytes, not A's\n"
    for name in names:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            read += ask(sock, f"GET1 0 - inbox/{name}\n".encode()).startswith(b"OK1")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            go = ask(sock, f"PUT1 {len(bogus)} {digest_of(bogus)} 1 inbox/{name}\n".encode())
            if go.startswith(b"OK1 0"):
                sock.sendall(bogus)
                accepted += ask(sock, b"").startswith(b"OK1")
    return read, accepted


#: Runs a server with /proc unmounted in a private mount namespace: no ``linkat`` through
#: ``/proc/self/fd``, so uploads take the fallback (a file under a reserved name) for real.
NO_PROC = ("unshare", "--mount", "--propagation", "private", "sh", "-c", 'umount -l /proc && exec "$@"', "sh")


def _no_proc_possible() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run([*NO_PROC, "test", "!", "-d", "/proc/self"], capture_output=True)
    return probe.returncode == 0


def _race(model: str, rounds: int, wrap: tuple[str, ...]) -> tuple[int, int, int, int, int, int, int]:
    """``rounds`` uploads by A, each raced by B; (names B saw, reads and overwrites of A's file the
    server allowed, uploads told OK holding other bytes, failed, names left) and how many of A's
    uploads had a name on disk mid-way (the proof of which way the server took)."""
    base = Path(tempfile.mkdtemp(prefix="sockkit-rel-swap-"))
    root = base / "root"
    (root / "inbox").mkdir(parents=True)
    (root / "inbox" / "old.txt").write_bytes(b"already here\n")
    seen_total = read_total = accepted_total = wrong = failed = named = 0
    try:
        with getfile_server(model, root, "--allow-upload", wrap=wrap) as server:
            for index in range(rounds):
                data = os.urandom(256 << 10)
                target = f"a{index}.bin"
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as owner:
                    go = ask(owner, f"PUT1 {len(data)} {digest_of(data)} {index % 2} inbox/{target}\n".encode())
                    if not go.startswith(b"OK1 0"):
                        failed += 1
                        continue
                    # The file the body goes to exists before "OK1 0" is sent, named or not; B also
                    # tries its real name, as if it had learned it some other way.
                    on_disk = [name for name in os.listdir(root / "inbox") if is_reserved(name)]
                    named += bool(on_disk)
                    owner.sendall(data[:len(data) // 2])
                    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as spy:
                        seen = read_listing(spy, b"LIST1 inbox\n")
                        seen += [path.removeprefix("inbox/") for path in read_listing(spy, b"TREE1 .\n")]
                    foreign = [name for name in seen if name not in {"old.txt", *(f"a{i}.bin" for i in range(index))}]
                    read, accepted = _hijack(server.port, foreign + on_disk)
                    seen_total += len(foreign)
                    read_total += read
                    accepted_total += accepted
                    owner.sendall(data[len(data) // 2:])
                    answer = ask(owner, b"")
                landed = (root / "inbox" / target).read_bytes() if (root / "inbox" / target).exists() else b""
                failed += not answer.startswith(b"OK1")
                wrong += answer.startswith(b"OK1") and landed != data
            left = [n for n in os.listdir(root / "inbox") if not re.fullmatch(r"old\.txt|a\d+\.bin", n)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return seen_total, read_total, accepted_total, wrong, failed, len(left), named


@scenario("upload-swap", "while client A uploads, client B lists (LIST1, TREE1) and tries to read and overwrite "
          "every name it sees: B sees no temporary name, and A's verified bytes are what lands; again with /proc "
          "unmounted (the reserved-name fallback for filesystems without O_TMPFILE)", MODELS)
def upload_swap(model: str, scale: Scale) -> Row:
    if model == "sequential":
        return skip("upload-swap", model, "one client at a time: no one else runs during an upload")
    rounds = scale.pick(3, 30)
    passes = {"unnamed": _race(model, rounds, ())}
    if _no_proc_possible():
        passes["reserved name"] = _race(model, rounds, NO_PROC)
    figures = [f"{how} ({named} named on disk): seen {seen}, read {read}, overwritten {taken}, told OK holding "
               f"other bytes {wrong}, failed {failed}, left behind {left}"
               for how, (seen, read, taken, wrong, failed, left, named) in passes.items()]
    if len(passes) == 1:
        figures.append("reserved-name pass n/a (no unshare or no mount namespace)")
    ok = all(not any(counts[:6]) for counts in passes.values())
    return Row("upload-swap", model, f"{rounds} uploads raced by another client, each way; " + "; ".join(figures), ok)


def _guess(port: int, token: str, source: str = "127.0.0.1") -> bytes:
    """One AUTH1 on a fresh connection from ``source``; the server's answer line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        return ask(sock, f"AUTH1 {token}\n".encode())


@scenario("token-guessing", "one client guesses the token on fresh connections as fast as it can for 3 s: after "
          f"{BURST} wrong tokens its address gets one try a second (its tokens refused unchecked), logged once; "
          "a client from another address with the right token is let in meanwhile", MODELS)
def token_guessing(model: str, scale: Scale) -> Row:
    base = Path(tempfile.mkdtemp(prefix="sockkit-rel-token-"))
    seconds = scale.pick(3.0, 20.0)
    compared = throttled = other = 0
    try:
        with running("getfile", "--model", model, "--port", "0", "--root", str(base), "--token", "the-real-one",
                     "--workers", "4" if model == "pool" else str(PREFORK_WORKERS)) as server:
            if model == "prefork":
                wait_for_workers(server, PREFORK_WORKERS, hello=b"AUTH1 the-real-one\n")
            began = time.monotonic()
            honest = b""
            while time.monotonic() - began < seconds:
                answer = _guess(server.port, f"guess-{compared + throttled + other}")
                if b"too many wrong tokens" in answer:
                    throttled += 1
                elif b"wrong token" in answer:
                    compared += 1
                else:
                    other += 1
                if not honest and time.monotonic() - began > seconds / 2:
                    honest = _guess(server.port, "the-real-one", source="127.0.0.2")
            took = time.monotonic() - began
            logged = [line for line in list(server.lines) if "too many wrong tokens from 127.0.0.1" in line]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    allowed = BURST + took / REFILL + 2
    ok = compared <= allowed and honest.startswith(b"OK1") and len(logged) == 1 and other == 0
    return Row("token-guessing", model, f"{compared + throttled} guesses in {took:.1f} s: {compared} compared "
                                        f"({compared / took:.0f}/s; allowed {allowed:.0f}), {throttled} refused "
                                        f"unchecked; log lines {len(logged)}; other address let in "
                                        f"{honest.startswith(b'OK1')}", ok)


@contextlib.contextmanager
def _small_disk(base: Path, size: str):
    """A tmpfs of ``size`` at ``base``/disk (None where it cannot be mounted)."""
    mount = base / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@scenario("stalled-upload", "on an 8 MiB disk, client A uploads 5 of 6 MiB and goes silent: 1.5 s later "
          "(--upload-stall 1) client B's 5 MiB upload is stored, A's room taken back, A told 'busy' with its next "
          "bytes; nothing waits for the idle timeout (300 s)", MODELS)
def stalled_upload(model: str, scale: Scale) -> Row:
    if model == "sequential":
        return skip("stalled-upload", model, "one client at a time: no one else runs during an upload")
    base = Path(tempfile.mkdtemp(prefix="sockkit-rel-stall-"))
    try:
        with _small_disk(base, "8m") as disk:
            if disk is None:
                return skip("stalled-upload", model, "cannot mount a tmpfs here (needs root)")
            a_data, b_data = os.urandom(6 << 20), os.urandom(5 << 20)
            with getfile_server(model, disk, "--allow-upload", "--upload-stall", "1") as server, \
                    socket.create_connection(("127.0.0.1", server.port), timeout=10) as owner:
                ask(owner, f"PUT1 {len(a_data)} {digest_of(a_data)} 0 a.bin\n".encode())
                owner.sendall(a_data[:5 << 20])
                time.sleep(1.5)  # the stall itself (A sends nothing), not a synchronisation
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as other:
                    go = ask(other, f"PUT1 {len(b_data)} {digest_of(b_data)} 0 b.bin\n".encode())
                    stored = b""
                    if go.startswith(b"OK1 0"):
                        other.sendall(b_data)
                        stored = ask(other, b"")
                landed = (disk / "b.bin").exists() and (disk / "b.bin").read_bytes() == b_data
                try:
                    owner.sendall(a_data[5 << 20:(5 << 20) + 1000])
                    told = read_line(owner)
                except OSError:
                    told = b""
            left = sorted(os.listdir(disk))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ok = stored.startswith(b"OK1") and landed and b"stalled" in told and left == ["b.bin"]
    return Row("stalled-upload", model, f"B's upload: {(stored or go).decode(errors='replace').strip()[:60]!r}, "
                                        f"stored intact {landed}; A told {told.decode(errors='replace').strip()[:50]!r}"
                                        f"; on disk {left}", ok)


#: Requests each pipelining client sends (the issue's figure: ~1,100 answers of 64 KiB, ~64 MiB).
PIPELINED = 1100
#: What the hostile clients ask for: getfile's own request for a 64 KiB file (sent inline with its
#: header) and HTTP's for a 256 KiB one (a SendFile: an open descriptor per answer queued).
UNREAD_REQUESTS = (b"GET1 0 - small.bin\n", b"GET /large.bin HTTP/1.1\r\nHost: x\r\n\r\n")


def _send_unread(port: int, data: bytes) -> socket.socket:
    """A client that sends ``data`` at once and reads nothing (a small receive buffer, so what the
    server pushes stays in the server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    deadline = time.monotonic() + 5
    while data and time.monotonic() < deadline:  # bounded: the server may stop reading, as it should
        try:
            data = data[sock.send(data):]
        except BlockingIOError:
            time.sleep(0.01)
    return sock


def _fetch(port: int, name: str, size: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = ask(sock, f"GET1 0 - {name}\n".encode())
        body = b""
        while head.startswith(b"OK1") and len(body) < size:
            chunk = sock.recv(size - len(body))
            if not chunk:
                break
            body += chunk
    return body


def _close_all(socks: list[socket.socket]) -> None:
    while socks:
        socks.pop().close()


def _peak(server, seconds: float) -> dict:
    """The highest PSS and descriptor count of the server's process tree over ``seconds``."""
    from reliability.probes import snapshot

    peak = {"pss": 0.0, "fds": 0}
    for _ in range(max(1, int(seconds / 0.2))):
        time.sleep(0.2)
        now = snapshot(server)
        peak = {"pss": max(now["pss"], peak["pss"]), "fds": max(now["fds"], peak["fds"])}
    return peak


@scenario("pipelined-unread", "4 getfile clients (long: 32) each pipeline 1,100 GET1 of a 64 KiB file, 4 more "
          "1,100 HTTP/1.1 GETs of a 256 KiB file, and read nothing: they cost the server at most 16 MiB (long: 64) "
          "and 2 descriptors each more than as many clients that sent one request and read nothing (answers are "
          "made one at a time); a canary is served", MODELS)
def pipelined_unread(model: str, scale: Scale) -> Row:
    if model == "sequential":
        return skip("pipelined-unread", model, "one client at a time: the first one holds it until its idle timeout")
    clients = scale.pick(4, 32)
    base = Path(tempfile.mkdtemp(prefix="sockkit-rel-pipe-"))
    small, large = os.urandom(64 << 10), os.urandom(256 << 10)
    (base / "small.bin").write_bytes(small)
    (base / "large.bin").write_bytes(large)
    socks: list[socket.socket] = []
    try:
        with running("getfile", "--model", model, "--port", "0", "--quiet", "--root", str(base),
                     "--workers", str(4 * clients + 8) if model == "pool" else str(PREFORK_WORKERS)) as server:
            if model == "prefork":
                wait_for_workers(server, PREFORK_WORKERS, hello=b"LIST1 .\n")
            _fetch(server.port, "small.bin", len(small))  # warm: the first answer's allocations are no growth
            nothing = _peak(server, 0.2)
            # The same clients with one request each first: what a connection costs in this model
            # (a forked child, a thread) with one answer waiting in it.
            socks += [_send_unread(server.port, request) for request in UNREAD_REQUESTS for _ in range(clients)]
            single = _peak(server, 1.0)
            socks += [_send_unread(server.port, request * PIPELINED) for request in UNREAD_REQUESTS
                      for _ in range(clients)]
            both = _peak(server, 2.0)
            began = time.monotonic()
            canary = _fetch(server.port, "small.bin", len(small)) == small
            waited = time.monotonic() - began
            _close_all(socks)  # before the stop, which would wait its drain deadline for them
    finally:
        _close_all(socks)
        shutil.rmtree(base, ignore_errors=True)
    hostile = {key: both[key] - single[key] for key in both}
    plain = {key: single[key] - nothing[key] for key in both}
    extra_pss, extra_fds = hostile["pss"] - plain["pss"], hostile["fds"] - plain["fds"]
    allowed, allowed_fds = scale.pick(16, 64), 2 * clients * len(UNREAD_REQUESTS)  # a file and a dup of the socket
    ok = extra_pss < allowed and extra_fds <= allowed_fds and canary and waited < 5
    return Row("pipelined-unread", model, f"{2 * clients} clients x {PIPELINED} requests unread: PSS "
                                          f"+{hostile['pss']:.1f} MiB, fds +{hostile['fds']} (one request each: "
                                          f"+{plain['pss']:.1f} MiB, +{plain['fds']}; more allowed: {allowed} MiB, "
                                          f"{allowed_fds} fds); canary {'served' if canary else 'NOT served'} "
                                          f"in {waited:.2f} s",
               ok)
