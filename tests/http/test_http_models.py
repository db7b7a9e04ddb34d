"""HTTP on the getfile port over real sockets, driven by programs nobody here wrote: curl and wget.

Every model runs the same service; hostile input is tried under the thread and uvloop models (and
select); resuming a cut download is done by curl -C - and wget -c through sockkit's fault proxy.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from sockkit.proxy import FaultProxyThread, Faults, ProxyFaults
from sockkit.testing import MODELS as ALL_MODELS
from sockkit.testing import running
from tests.http.test_http_service import TRAVERSALS

CURL = shutil.which("curl")
WGET = shutil.which("wget")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl not installed (Debian package curl)")
needs_wget = pytest.mark.skipif(WGET is None, reason="wget not installed (Debian package wget)")
BIG = 3 * 1024 * 1024 + 5
HOSTILE_MODELS = ["thread", "uvloop", "select"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    top = tmp_path_factory.mktemp("http")
    root = top / "root"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello world\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(BIG))
    (top / "secret.txt").write_bytes(b"TOP-SECRET-CONTENT\n")
    (root / "escape").symlink_to(top / "secret.txt")
    old = time.time() - 60  # past the racy window: strong validators
    for path in (root / "hello.txt", root / "sub" / "big.bin"):
        os.utime(path, (old, old))
    return root


def url(server, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


def curl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-sS", "--max-time", "60", *args], capture_output=True, check=check)


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, half-close, read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = bytearray()
        while chunk := sock.recv(65536):
            out += chunk
    return bytes(out)


@needs_curl
@pytest.mark.parametrize("model", ALL_MODELS)
def test_curl_under_every_model(tree, model, tmp_path):
    """A big file (zero-copy), a small one, a range and a HEAD, all on one keep-alive connection."""
    with running("getfile", "--root", str(tree), "--port", "0", "--model", model) as server:
        out = tmp_path / "big.bin"
        result = curl("-o", str(out), url(server, "/sub/big.bin"), "-o", str(tmp_path / "hello"),
                      url(server, "/hello.txt"), "-w", "%{num_connects} ")
        assert out.read_bytes() == (tree / "sub" / "big.bin").read_bytes()
        assert (tmp_path / "hello").read_bytes() == b"hello world\n"
        assert result.stdout.split() == [b"1", b"0"]  # the second request reused the connection
        part = curl("-r", "1000-1999", url(server, "/sub/big.bin")).stdout
        assert part == (tree / "sub" / "big.bin").read_bytes()[1000:2000]
        head = curl("-I", url(server, "/sub/big.bin")).stdout
        assert f"Content-Length: {BIG}".encode() in head and b"ETag: " in head


@needs_wget
@pytest.mark.parametrize("model", ["thread", "uvloop"])
def test_wget_downloads_a_file_and_a_folder_archive(tree, model, tmp_path):
    with running("getfile", "--root", str(tree), "--port", "0", "--model", model) as server:
        subprocess.run([WGET, "-q", "-P", str(tmp_path), url(server, "/sub/big.bin")], check=True, timeout=60)
        assert (tmp_path / "big.bin").read_bytes() == (tree / "sub" / "big.bin").read_bytes()
        subprocess.run([WGET, "-q", "-O", str(tmp_path / "sub.tar"), url(server, "/sub/?tar")], check=True,
                       timeout=60)
        subprocess.run(["tar", "-xf", str(tmp_path / "sub.tar"), "-C", str(tmp_path)], check=True)
        assert (tmp_path / "sub" / "big.bin").read_bytes() == (tree / "sub" / "big.bin").read_bytes()


def cut_download(server, at: int):
    """A fault proxy in front of ``server`` that closes every connection after ``at`` bytes downstream."""
    return FaultProxyThread(("127.0.0.1", server.port), ProxyFaults(downstream=Faults(close_after=at)))


@needs_curl
def test_curl_resumes_a_cut_download_to_an_identical_file(tree, tmp_path):
    wanted = (tree / "sub" / "big.bin").read_bytes()
    out = tmp_path / "big.bin"
    with running("getfile", "--root", str(tree), "--port", "0") as server, cut_download(server, 1_000_000) as proxy:
        cut = curl("-o", str(out), f"http://127.0.0.1:{proxy.port}/sub/big.bin", check=False)
        assert cut.returncode != 0 and 0 < out.stat().st_size < BIG  # a partial file, and curl knows it
        resumed = curl("-C", "-", "-o", str(out), url(server, "/sub/big.bin"), "-w", "%{http_code}")
        assert resumed.stdout == b"206"
    assert out.read_bytes() == wanted


@needs_wget
def test_wget_resumes_a_cut_download_to_an_identical_file(tree, tmp_path):
    wanted = (tree / "sub" / "big.bin").read_bytes()
    with running("getfile", "--root", str(tree), "--port", "0") as server, cut_download(server, 1_500_000) as proxy:
        cut = subprocess.run([WGET, "-q", "--tries=1", "-P", str(tmp_path),
                              f"http://127.0.0.1:{proxy.port}/sub/big.bin"], timeout=60)
        partial = (tmp_path / "big.bin").stat().st_size
        assert cut.returncode != 0 and 0 < partial < BIG
        log = subprocess.run([WGET, "-c", "-P", str(tmp_path), url(server, "/sub/big.bin")], timeout=60,
                             capture_output=True, text=True)
        assert log.returncode == 0, log.stderr
        assert "206 Partial Content" in log.stderr
    assert (tmp_path / "big.bin").read_bytes() == wanted


@needs_curl
def test_https_with_the_servers_certificate(tree, certificate):
    cert, key = certificate
    with running("getfile", "--root", str(tree), "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)) \
            as server:
        body = curl("--cacert", str(cert), url(server, "/sub/big.bin", "https")).stdout
        assert body == (tree / "sub" / "big.bin").read_bytes()
        page = curl("--cacert", str(cert), url(server, "/", "https")).stdout
        assert b"hello.txt" in page


@needs_curl
def test_the_token_over_http(tree):
    with running("getfile", "--root", str(tree), "--port", "0", "--token", "s3cret") as server:
        assert curl("-o", "/dev/null", "-w", "%{http_code}", url(server, "/hello.txt")).stdout == b"401"
        assert curl("-u", "anyone:s3cret", url(server, "/hello.txt")).stdout == b"hello world\n"
        assert curl("-H", "Authorization: Bearer s3cret", url(server, "/hello.txt")).stdout == b"hello world\n"
        wrong = curl("-u", "anyone:guess", "-o", "/dev/null", "-w", "%{http_code}", url(server, "/"))
        assert wrong.stdout == b"401"
        server.wait_for_log("wrong token")


@pytest.mark.parametrize("model", ["thread", "uvloop"])
def test_sockkit_get_and_the_chapter_client_share_the_port(tree, model, tmp_path):
    with running("getfile", "--root", str(tree), "--port", "0", "--model", model) as server:
        subprocess.run([*_sockkit(), "get", "hello.txt", "--port", str(server.port), "-o", str(tmp_path)],
                       check=True, capture_output=True, timeout=60)
        assert (tmp_path / "hello.txt").read_bytes() == b"hello world\n"
        assert raw_exchange(server.port, b"hello.txt\n") == b"hello world\n"  # the chapter's client
        assert raw_exchange(server.port, b"GET /hello.txt HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\nhello world\n")


def _sockkit() -> list[str]:
    from sockkit.testing import sockkit_command
    return sockkit_command()


# -- hostile input, under the thread, uvloop and select models -------------------------------------------


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("model", HOSTILE_MODELS)
def test_hostile_requests_under_the_model(tree, model):
    """Each traversal, smuggling shape, oversized head, absolute URL and unknown method: a 4xx, nothing
    from outside the root, and the server still answers an honest client afterwards."""
    hostile = [f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for target in TRAVERSALS]
    hostile += [
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
        b"BREW /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /hello.txt HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00 HTTP/1.1\r\n\r\n",
    ]
    with running("getfile", "--root", str(tree), "--port", "0", "--model", model) as server:
        for request in hostile:
            answer = raw_exchange(server.port, request)
            assert b"TOP-SECRET" not in answer
            assert not answer or 400 <= status(answer) < 500, (request[:80], answer[:200])
        pipelined = raw_exchange(server.port, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n" * 5)
        assert pipelined.count(b"HTTP/1.1 200 OK") == 5 and pipelined.count(b"hello world\n") == 5
        honest = raw_exchange(server.port, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status(honest) == 200 and honest.endswith(b"hello world\n")


@pytest.mark.parametrize("model", HOSTILE_MODELS)
def test_slow_headers_meet_the_request_deadline(tree, model):
    """A head trickled forever is cut at --request-timeout, while others are served meanwhile."""
    args = ("getfile", "--root", str(tree), "--port", "0", "--model", model, "--request-timeout", "1")
    with running(*args) as server, socket.create_connection(("127.0.0.1", server.port), timeout=15) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\n")
        began = time.monotonic()
        closed = False
        while time.monotonic() - began < 10:
            try:
                slow.sendall(b"X-Slow: y\r\n")
            except OSError:
                closed = True
                break
            honest = raw_exchange(server.port, b"GET /hello.txt HTTP/1.0\r\n\r\n")
            assert honest.endswith(b"hello world\n")
            slow.settimeout(0.3)
            try:
                if slow.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except OSError:
                closed = True
                break
        assert closed and time.monotonic() - began < 8



@needs_curl
@pytest.mark.parametrize("model", HOSTILE_MODELS)
def test_curl_sipping_a_file_loses_its_slot_at_the_minimum_rate(tmp_path, model):
    """curl --limit-rate far under --min-rate holds the one transfer slot until the server cuts it
    (within a few windows once the socket buffers are full); then a fast curl gets the whole file.
    (The sipper itself still reads what the kernel buffered, megabytes at 16 KiB/s: it is stopped here.)"""
    root = tmp_path / "root"
    root.mkdir()
    size = 64 << 20  # past what loopback's socket buffers hold, so the sender must wait on the reader
    with open(root / "big.bin", "wb") as big:
        big.truncate(size)
    args = ("getfile", "--root", str(root), "--port", "0", "--model", model, "--max-transfers", "1",
            "--min-rate", "256k", "--min-rate-window", "2")
    with running(*args) as server:
        sipper = subprocess.Popen([CURL, "-sSf", "--max-time", "60", "--limit-rate", "16k", "-o",
                                   str(tmp_path / "sipped"), url(server, "/big.bin")], stderr=subprocess.DEVNULL)
        try:
            sipped = tmp_path / "sipped"
            deadline = time.monotonic() + 10
            while not (sipped.exists() and sipped.stat().st_size) and time.monotonic() < deadline:
                time.sleep(0.05)  # until the sipper holds the slot (its body has begun)
            assert sipped.exists() and sipped.stat().st_size, "the sipper's download never began"
            began, served = time.monotonic(), None
            while time.monotonic() - began < 20:
                fast = curl("-o", str(tmp_path / "fast"), "-w", "%{http_code}", url(server, "/big.bin"), check=False)
                if fast.stdout == b"200":
                    served = time.monotonic() - began
                    break
                time.sleep(0.5)
            assert served is not None, "the sipper kept the only transfer slot for 20 s"
            assert (tmp_path / "fast").stat().st_size == size
            assert sipper.poll() is None  # still sipping its buffered bytes: the cut was the server's
        finally:
            sipper.kill()
            sipper.wait()
