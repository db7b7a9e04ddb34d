"""An EIO from sendfile (a failing disk) is logged by the server, once, naming the client and the
file -- under every model -- instead of the client alone seeing "closed after 0 of N bytes".

No real failing disk can be had here without device-mapper (no /dev/mapper in this container), so
the narrowest seam: an LD_PRELOAD shim, compiled with cc at test time, makes ``sendfile`` fail with
EIO for one path only; everything else (sockets, processes, the other files) is real.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess

import pytest

from sockkit.catalog import MODELS, models_where
from sockkit.testing import read_line, running, worker_options

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int failing(int fd) {
    const char *want = getenv("SOCKKIT_EIO_PATH");
    char link[64], target[4096];
    ssize_t n;
    if (!want) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = 0;
    return strcmp(target, want) == 0;
}

#define SHIMMED(name) \
    ssize_t name(int out, int in, off_t *offset, size_t count) { \
        static ssize_t (*real)(int, int, off_t *, size_t); \
        if (failing(in)) { errno = EIO; return -1; } \
        if (!real) real = (ssize_t (*)(int, int, off_t *, size_t))dlsym(RTLD_NEXT, #name); \
        return real(out, in, offset, count); \
    }
SHIMMED(sendfile)
SHIMMED(sendfile64)

/* With SOCKKIT_EIO_READS set, reading the file fails too (what a TLS send does: it cannot use
   sendfile; the digest reads with preadv as well, so only answers that need no digest can be used). */
static int failing_read(int fd) {
    return getenv("SOCKKIT_EIO_READS") != NULL && failing(fd);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t offset) {
    static ssize_t (*real)(int, void *, size_t, off_t);
    if (failing_read(fd)) { errno = EIO; return -1; }
    if (!real) real = (ssize_t (*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
    return real(fd, buf, count, offset);
}

struct iovec;
ssize_t preadv64v2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags) {
    static ssize_t (*real)(int, const struct iovec *, int, off_t, int);
    if (failing_read(fd)) { errno = EIO; return -1; }
    if (!real) real = (ssize_t (*)(int, const struct iovec *, int, off_t, int))dlsym(RTLD_NEXT, "preadv64v2");
    return real(fd, iov, iovcnt, offset, flags);
}
"""

SIZE = 256 * 1024  # past INLINE_BODY: sent with sendfile


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> str:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build the sendfile shim")
    folder = tmp_path_factory.mktemp("eio")
    source, library = folder / "eio.c", folder / "eio.so"
    source.write_text(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source), "-ldl"], check=True, capture_output=True)
    return str(library)


@pytest.mark.parametrize("model", list(MODELS))
def test_an_eio_from_sendfile_is_logged_once_with_the_client_and_the_file(model, shim, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "bad.bin").write_bytes(os.urandom(SIZE))
    (root / "good.bin").write_bytes(os.urandom(SIZE))
    env = {**os.environ, "LD_PRELOAD": shim, "SOCKKIT_EIO_PATH": str((root / "bad.bin").resolve())}
    with running("getfile", "--model", model, "--port", "0", "--root", str(root), *worker_options(model, 2),
                 env=env, wrap=("sh", "-c", 'exec "$@" 2>&1', "sh")) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET1 0 - good.bin\n")  # the shim fails only the one file
            assert read_line(sock).startswith(b"OK1 %d " % SIZE)
            body = b""
            while len(body) < SIZE:
                body += sock.recv(SIZE - len(body))
            assert body == (root / "good.bin").read_bytes()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET1 0 - bad.bin\n")
            assert read_line(sock).startswith(b"OK1 %d " % SIZE)
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
            assert got == b""  # closed short, as before; now the server says why
            port = sock.getsockname()[1]
        lines = server.wait_for_log("Input/output error")
        assert re.search(rf"client \('127\.0\.0\.1', {port}\): reading 'bad\.bin' failed at byte 0: "
                         r"Input/output error \(EIO\)", lines[0]), lines
    assert sum("Input/output error" in line for line in server.lines) == 1


def _http_get(sock: socket.socket, path: str) -> bytes:
    """An HTTP/1.1 GET: what came back before the server closed."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


@pytest.mark.parametrize("model", models_where(tls=True))
def test_an_eio_reading_a_file_for_tls_is_logged_too(model, shim, certificate, tmp_path):
    """Under TLS there is no sendfile: the file is read (preadv in the blocking models, pread under
    asyncio/uvloop) and encrypted. A read that fails is the same fault, and was silent in the blocking
    models (6 of the 9 TLS models). Asked in the chapter's own protocol, whose answer needs no digest
    (a digest, as GET1's header and HTTP's validators need, reads the file first, and fails there,
    answered as an error)."""
    cert, key = certificate
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "bad.bin").write_bytes(os.urandom(SIZE))
    env = {**os.environ, "LD_PRELOAD": shim, "SOCKKIT_EIO_PATH": str((root / "docs" / "bad.bin").resolve()),
           "SOCKKIT_EIO_READS": "1"}
    context = ssl.create_default_context(cafile=str(cert))
    with running("getfile", "--model", model, "--port", "0", "--root", str(root), "--tls-cert", str(cert),
                 "--tls-key", str(key), *worker_options(model, 2), env=env,
                 wrap=("sh", "-c", 'exec "$@" 2>&1', "sh")) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            port = sock.getsockname()[1]
            sock.sendall(b"docs/bad.bin\n")
            got = b""
            with contextlib.suppress(OSError):  # (a reset, or a TLS session ended without close_notify)
                while chunk := sock.recv(65536):
                    got += chunk
        assert len(got) < SIZE
        lines = server.wait_for_log("Input/output error")
        assert re.search(rf"client \('127\.0\.0\.1', {port}\): reading 'docs/bad\.bin' failed at byte 0: "
                         r"Input/output error \(EIO\)", lines[0]), lines
    assert sum("Input/output error" in line for line in server.lines) == 1


@pytest.mark.parametrize("model", ["thread", "select", "uvloop"])
def test_an_eio_under_the_http_face_names_the_path(model, shim, tmp_path):
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "bad.bin").write_bytes(os.urandom(SIZE))
    env = {**os.environ, "LD_PRELOAD": shim, "SOCKKIT_EIO_PATH": str((root / "docs" / "bad.bin").resolve())}
    with running("getfile", "--model", model, "--port", "0", "--root", str(root), env=env,
                 wrap=("sh", "-c", 'exec "$@" 2>&1', "sh")) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            port = sock.getsockname()[1]
            got = _http_get(sock, "/docs/bad.bin")
        assert got.startswith(b"HTTP/1.1 200") and len(got) < SIZE
        lines = server.wait_for_log("Input/output error")
        assert re.search(rf"client \('127\.0\.0\.1', {port}\): reading '/docs/bad\.bin' failed", lines[0]), lines
    assert sum("Input/output error" in line for line in server.lines) == 1
