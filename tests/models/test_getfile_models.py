"""``sockkit serve getfile`` under every server model, over real loopback sockets."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import xxhash

from sockkit.protocols.getfile import FileHeader, Get, List, Put, Tree, format_request, parse_answer, parse_header
from sockkit.testing import PARALLEL_MODELS, descendants, running, sockkit_command, worker_options
from tests.uploads import held_uploads

BIG_SIZE = 32 << 20  # large enough that a client that never reads leaves the server stuck mid-send
SIZES = {"zero": 0, "one": 1, "k-1": 1023, "k": 1024, "k+1": 1025, "three-megs": 3 << 20}


def digest_of(data: bytes) -> str:
    return "xxh3-128:" + xxhash.xxh3_128(data).hexdigest()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("getfile")
    root = base / "root"
    root.mkdir()
    for name, size in SIZES.items():
        (root / name).write_bytes(os.urandom(size))
    (root / "naïve name with spaces.bin").write_bytes(bytes(range(256)) * 5)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "a.txt").write_bytes(b"a\n")
    (root / "sub" / "deeper" / "b.txt").write_bytes(b"b\n")
    with open(root / "big.bin", "wb") as out:
        block = os.urandom(1 << 20)
        for _ in range(BIG_SIZE >> 20):
            out.write(block)
    os.mkfifo(root / "fifo")
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "zero-dev").symlink_to("/dev/zero")
    (root / "escape").symlink_to("../outside")
    (root / "outdir").symlink_to(base / "outside")
    (root / "inside").symlink_to("sub/a.txt")
    if os.geteuid() == 0:
        os.mknod(root / "null-device", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (base / "outside").mkdir()
    (base / "outside" / "secret").write_bytes(b"TOP SECRET\n")
    return root


class Client:
    """A raw protocol client: lines and exact byte counts over one socket."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> Client:
        self.sock.sendall(data)
        return self

    def line(self) -> bytes:
        return self.file.readline(8192)

    def exact(self, count: int) -> bytes:
        data = self.file.read(count)
        assert len(data) == count, f"short body: {len(data)} of {count}"
        return data

    def rest(self) -> bytes:
        """Everything until the server closes."""
        return self.file.read()

    def header(self) -> FileHeader:
        answer = parse_answer(self.line())
        assert isinstance(answer, list), answer
        return parse_header(answer)

    def error(self) -> str:
        answer = parse_answer(self.line())
        assert not isinstance(answer, list), answer
        return answer.code.value


@contextmanager
def client(port: int, timeout: float = 20.0) -> Iterator[Client]:
    c = Client(port, timeout)
    try:
        yield c
    finally:
        c.close()


def serve(model: str, root: Path, *extra: str):
    return running("getfile", "--model", model, "--port", "0", "--root", str(root), *extra)


def get(path: str, offset: int = 0, version: str | None = None) -> bytes:
    return format_request(Get(path, offset, version))


def test_round_trips(model, served):
    """GET1 of 0 B .. 3 MiB, binary, non-ASCII names with spaces, pipelined on one connection;
    LIST1, TREE1 and resume with a matching and a changed version; every body byte-exact."""
    names = [*SIZES, "naïve name with spaces.bin", "sub/deeper/b.txt", "inside"]
    with serve(model, served, "--quiet") as server, client(server.port) as c:
        c.send(b"".join(get(name) for name in names))
        for name in names:
            data = (served / name).read_bytes()
            header = c.header()
            assert (header.size, header.offset, header.digest) == (len(data), 0, digest_of(data))
            assert c.exact(len(data)) == data
        data = (served / "three-megs").read_bytes()
        c.send(get("three-megs", 12345, digest_of(data)) + get("three-megs", 12345, digest_of(b"old")))
        resumed = c.header()
        assert resumed.offset == 12345 and c.exact(resumed.remaining) == data[12345:]
        restarted = c.header()
        assert restarted.offset == 0 and c.exact(restarted.remaining) == data
        c.send(format_request(List("sub")) + format_request(Tree("sub")))
        assert c.line() == b"OK1 2\n"
        assert sorted(c.line().split(b" ", 3)[3] for _ in range(2)) == [b"a.txt\n", b"deeper\n"]
        assert c.line() == b"OK1 2\n"
        assert sorted(c.line().split(b" ", 3)[3] for _ in range(2)) == [b"a.txt\n", b"deeper/b.txt\n"]


REFUSED = [
    ("nothing", "not-found"), ("sub", "is-directory"), ("fifo", "not-regular"), ("zero-dev", "outside-root"),
    ("passwd", "outside-root"), ("escape/secret", "outside-root"), ("outdir/secret", "outside-root"),
    ("../outside/secret", "outside-root"), ("sub/../../outside/secret", "outside-root"),
    ("/etc/passwd", "outside-root"), ("%2e%2e/outside/secret", "outside-root"),
]


def test_refusals(model, served):
    """Every refused path answers ERR1 CODE on a connection that stays usable; no FIFO hang, no
    byte from outside the root; the server logs why."""
    refused = list(REFUSED)
    if (served / "null-device").exists():
        refused.append(("null-device", "not-regular"))
    with serve(model, served) as server, client(server.port) as c:
        for path, code in refused:
            line = b"GET1 0 - " + path.encode() + b"\n" if path.startswith("%") else get(path)
            assert c.send(line).error() == code, path
        c.send(get("one"))
        assert c.exact(c.header().size) == (served / "one").read_bytes()
        server.wait_for_log(r"refused GET1 '/etc/passwd': outside-root")


@pytest.mark.parametrize(("line", "code"), [
    (b"GET1 0 - a\x00b\n", "bad-request"), (b"GET1 0 - \xff\xfe\n", "bad-request"),
    (b"GET1 0 - " + b"x" * 5000 + b"\n", "too-long"), (b"GET1 0 - " + b"x" * 5000, "too-long"),
])
def test_bad_requests_close_with_a_reason(model, served, line, code):
    with serve(model, served, "--quiet") as server, client(server.port) as c:
        c.send(line)
        assert c.error() == code
        assert c.rest() == b""


def test_request_deadline(model, served):
    """A request line with no newline is cut off at --request-timeout, however it trickles."""
    with serve(model, served, "--quiet", "--request-timeout", "1") as server, client(server.port, 15) as c:
        c.send(b"GET1 0 - on")
        for _ in range(3):
            try:
                c.send(b"e")
            except OSError:
                break
        assert c.rest() == b""


def test_chapter_client_gets_the_exact_file(model, served):
    """The chapter's client: send 'path\\n', read raw bytes to end of stream."""
    with serve(model, served, "--quiet") as server:
        for name in ("three-megs", "zero", "sub/a.txt"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
                sock.sendall(name.encode() + b"\n")
                got = bytearray()
                while chunk := sock.recv(1024):
                    got += chunk
            assert bytes(got) == (served / name).read_bytes()
        with client(server.port) as c:  # refused: closed with no bytes at all
            assert c.send(b"../outside/secret\n").rest() == b""


@pytest.mark.parametrize("model", PARALLEL_MODELS)
def test_a_client_that_never_reads_does_not_block_others(model, served):
    with serve(model, served, "--quiet") as server:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        try:
            stuck.sendall(get("big.bin"))
            for _ in range(3):
                with client(server.port, 10) as c:
                    c.send(get("k"))
                    assert c.exact(c.header().size) == (served / "k").read_bytes()
        finally:
            stuck.close()


@pytest.mark.parametrize("model", PARALLEL_MODELS)
def test_busy_past_max_transfers(model, served):
    """With --max-transfers 1, a second large download while the first is stuck gets ERR1 busy;
    once the first client leaves, downloads work again (the slot is freed, even across processes)."""
    with serve(model, served, "--quiet", "--max-transfers", "1") as server:
        stuck = Client(server.port)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.send(get("big.bin"))
        assert stuck.header().size == BIG_SIZE  # its transfer has begun
        with client(server.port) as c:
            assert c.send(get("big.bin")).error() == "busy"
        with client(server.port) as c:  # a small file is sent inline and needs no slot
            assert c.exact(c.send(get("k")).header().size) == (served / "k").read_bytes()
        stuck.close()
        for _attempt in range(200):  # the server notices the reset on its next send
            with client(server.port) as c:
                answer = c.send(get("three-megs")).line()
                if answer.startswith(b"OK1"):
                    break
            time.sleep(0.05)
        assert answer.startswith(b"OK1"), answer


def test_twenty_concurrent_clients(model, served):
    data = (served / "three-megs").read_bytes()
    results: list[bool] = []

    def fetch(port: int) -> None:
        with client(port, 60) as c:
            results.append(c.exact(c.send(get("three-megs")).header().size) == data)

    # The pool model queues at most 4 clients per worker and tells the rest "busy" by design.
    workers = worker_options(model, threads=20, processes=2)
    with serve(model, served, "--quiet", *workers) as server:
        threads = [threading.Thread(target=fetch, args=(server.port,)) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert results == [True] * 20


def test_directory_swapped_for_a_symlink_never_leaks(model, tmp_path):
    """A directory is swapped for a symlink to outside the root while requests race through it:
    every answer is the inside file or a refusal, never a byte of the outside one."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"inside\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"OUTSIDE\n")
    stop = threading.Event()

    def swap() -> None:
        for _ in range(100_000):
            if stop.is_set():
                return
            os.rename(root / "d", root / "d.real")
            os.symlink(outside, root / "d")
            os.unlink(root / "d")
            os.rename(root / "d.real", root / "d")

    with serve(model, root, "--quiet") as server, client(server.port) as c:
        swapper = threading.Thread(target=swap)
        swapper.start()
        answers = []
        try:
            for _ in range(300):
                line = c.send(get("d/f")).line()
                if line.startswith(b"OK1"):
                    answers.append(c.exact(parse_header(parse_answer(line)).remaining))
                else:
                    assert parse_answer(line).code.value in ("not-found", "outside-root"), line
        finally:
            stop.set()
            swapper.join(10)
        assert set(answers) <= {b"inside\n"}


def temp_files(root: Path, server) -> list[str]:
    """What uploads hold under ``root``: a reserved name, or an unnamed file the server has open."""
    return held_uploads(root, [server.pid, *descendants(server.pid)])


def test_upload(model, tmp_path):
    """PUT1: refused without --allow-upload; stored verified; never overwriting without the flag;
    a wrong digest stores nothing; a client gone mid-upload leaves no temporary file."""
    root = tmp_path / "up"
    root.mkdir()
    data = os.urandom(200_000)
    request = format_request(Put("new.bin", len(data), digest_of(data)))
    with serve(model, root, "--quiet") as server, client(server.port) as c:
        assert c.send(request).error() == "upload-disabled"
    with serve(model, root, "--quiet", "--allow-upload") as server:
        with client(server.port) as c:
            assert c.send(request).line() == b"OK1 0\n"
            assert c.send(data).line() == f"OK1 {len(data)}\n".encode()
            assert c.send(request).error() == "exists"
            replacement = b"replacement"
            c.send(format_request(Put("new.bin", len(replacement), digest_of(replacement), True)))
            assert c.line() == b"OK1 0\n" and c.send(replacement).line() == b"OK1 11\n"
            c.send(format_request(Put("bad.bin", 3, digest_of(b"abc"))))
            assert c.line() == b"OK1 0\n" and c.send(b"abd").error() == "corrupt"
        assert (root / "new.bin").read_bytes() == b"replacement"
        assert not (root / "bad.bin").exists()
        with client(server.port) as c:
            c.send(format_request(Put("half.bin", len(data), digest_of(data))))
            assert c.line() == b"OK1 0\n"
            c.send(data[:50_000])
            for _ in range(200):
                if temp_files(root, server):
                    break
                time.sleep(0.02)
        for _ in range(250):  # the server sees the end of stream and removes the temporary file
            if not temp_files(root, server):
                break
            time.sleep(0.02)
        assert temp_files(root, server) == [] and not (root / "half.bin").exists()


def test_token(model, served):
    with serve(model, served, "--quiet", "--token", "open sesame") as server:
        with client(server.port) as c:
            assert c.send(get("one")).error() == "auth-required" and c.rest() == b""
        with client(server.port) as c:
            assert c.send(b"AUTH1 wrong\n").error() == "auth-required" and c.rest() == b""
        with client(server.port) as c:
            assert c.send(b"AUTH1 open sesame\n").line() == b"OK1 0\n"
            assert c.exact(c.send(get("one")).header().size) == (served / "one").read_bytes()
        with client(server.port) as c:  # the chapter's protocol has no token: nothing for it
            assert c.send(b"one\n").rest() == b""


def test_token_from_environment(served):
    env = dict(os.environ, SOCKKIT_TOKEN="from-env")
    with running("getfile", "--port", "0", "--root", str(served), "--quiet", env=env) as server, \
            client(server.port) as c:
        assert c.send(b"AUTH1 from-env\n").line() == b"OK1 0\n"


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "example.org"])
def test_exposure_refused_without_token_or_tls(served, host):
    """Binding beyond loopback with no token and no TLS refuses to start (before binding)."""
    done = subprocess.run(sockkit_command("serve", "getfile", "--host", host, "--port", "0", "--root", str(served)),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "refusing to serve getfile" in done.stderr and "--insecure" in done.stderr
    assert "listening" not in done.stdout


@pytest.mark.parametrize("token_from", ["--token", "SOCKKIT_TOKEN"])
def test_token_over_clear_text_beyond_loopback_is_refused(served, token_from):
    """A token is no licence for clear text beyond loopback: it would cross the network readable
    (issue 16). Refused before binding; with --insecure it starts, and says the token is exposed."""
    extra = ["--token", "s3cret"] if token_from == "--token" else []
    env = dict(os.environ, SOCKKIT_TOKEN="s3cret") if token_from == "SOCKKIT_TOKEN" else None
    command = sockkit_command("serve", "getfile", "--host", "0.0.0.0", "--port", "0", "--root", str(served), *extra)
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2 and "listening" not in done.stdout
    assert "with a token but no TLS" in done.stderr and "--insecure" in done.stderr
    with running("getfile", "--host", "0.0.0.0", "--port", "0", "--root", str(served), "--quiet", "--insecure",
                 *extra, env=env) as server, client(server.port) as c:
        assert c.send(b"AUTH1 s3cret\n").line() == b"OK1 0\n"


def test_token_from_environment_counts_for_the_exposure_rule(served, monkeypatch):
    """build() puts $SOCKKIT_TOKEN where serve's exposure rule looks (args.token); no bind needed."""
    import argparse

    from sockkit.services.getfile.spec import build

    monkeypatch.setenv("SOCKKIT_TOKEN", "from-env")
    args = argparse.Namespace(root=str(served), allow_upload=False, token=None, max_transfers=4, max_upload=None,
                              upload_stall=30.0, quiet=True, host="0.0.0.0")
    service = build(args)
    assert args.token == "from-env" and service.token == "from-env"
    service.root.close()


def test_missing_root_is_a_clear_error(tmp_path):
    done = subprocess.run(sockkit_command("serve", "getfile", "--port", "0", "--root", str(tmp_path / "nope")),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "nope" in done.stderr



@pytest.mark.parametrize("model", ["thread", "fork", "asyncio", "prefork"])
def test_over_tls(model, served, certificate):
    """The same bytes over TLS (the models carry TLS; the service does not know)."""
    cert, key = certificate
    data = (served / "three-megs").read_bytes()
    with serve(model, served, "--quiet", "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(get("three-megs") + get("k"))
            stream = sock.makefile("rb")
            header = parse_header(parse_answer(stream.readline()))
            assert stream.read(header.remaining) == data
            header = parse_header(parse_answer(stream.readline()))
            assert stream.read(header.remaining) == (served / "k").read_bytes()


@pytest.mark.parametrize("model", ["thread", "select", "asyncio", "fork"])
def test_connection_limit_answers_err1_busy(model, served):
    """Past --max-connections the service's busy reply is one ERR1 busy line, then close."""
    with serve(model, served, "--quiet", "--max-connections", "1") as server, client(server.port) as holder:
        assert holder.send(b"LIST1 sub\n").line() == b"OK1 2\n"  # the one slot is taken
        with client(server.port) as late:
            assert late.error() == "busy"
            assert late.rest() == b""
