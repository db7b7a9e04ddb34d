"""The client's TLS: verification on by default, a self-signed certificate made by the test."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from sockkit.clients import getfile, getfile_tree
from sockkit.errors import ConnectError
from tests.clients.fake_getfile_server import FakeServer

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture
def tls_server(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with FakeServer({"secret.txt": b"over TLS\n" * 1000}, tls=context) as fake:
        yield fake


def client_context(cafile: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile) if cafile else None)


def test_download_over_verified_tls(tmp_path, tls_server, certificate):
    result = getfile.download("secret.txt", port=tls_server.port, dest=tmp_path, tls=client_context(certificate[0]))
    assert (tmp_path / "secret.txt").read_bytes() == b"over TLS\n" * 1000 and result.size == 9000


def test_untrusted_certificate_is_refused(tmp_path, tls_server):
    with pytest.raises(ConnectError, match="certificate not accepted"):
        getfile.download("secret.txt", port=tls_server.port, dest=tmp_path, tls=client_context(None))
    assert list(tmp_path.iterdir()) == []


def test_wrong_host_name_is_refused(tmp_path, certificate):
    other = Path(certificate[0]).parent / "other"
    other.mkdir(exist_ok=True)
    cert, key = other / "cert.pem", other / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=elsewhere.example", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FakeServer({"f": b"x"}, tls=context) as fake, pytest.raises(ConnectError, match="certificate") as caught:
        getfile.download("f", port=fake.port, dest=tmp_path, tls=client_context(cert))
    # The certificate is trusted (--cafile was given): the advice is about the name, not the CA.
    assert "--host" in str(caught.value) and "--cafile" not in str(caught.value)


def test_plain_client_against_tls_server_fails_clearly(tmp_path, tls_server):
    with pytest.raises(Exception) as caught:
        getfile.download("secret.txt", port=tls_server.port, dest=tmp_path, timeout=2)
    assert "\n" not in str(caught.value)
    assert "use --tls" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_tls_with_cafile(tmp_path, tls_server, certificate):
    done = subprocess.run([sys.executable, "-m", "sockkit", "get", "secret.txt", "--port", str(tls_server.port),
                           "--cafile", str(certificate[0])], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "sockkit", "get", "secret.txt", "-o", "again.txt", "--port",
                           str(tls_server.port), "--tls"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "certificate not accepted" in done.stderr and "--cafile" in done.stderr


def test_against_the_real_server_over_tls(tmp_path, certificate):
    """`sockkit serve getfile --tls-cert/--tls-key` and `sockkit get --cafile`, byte for byte (a 5 MiB file)."""
    from sockkit.testing import running

    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(5 << 20)
    (root / "f.bin").write_bytes(data)
    cert, key = certificate
    with running("getfile", "--port", "0", "--root", str(root), "--tls-cert", str(cert), "--tls-key", str(key),
                 "--quiet") as server:
        dest = tmp_path / "dest"
        dest.mkdir()
        result = getfile.download("f.bin", port=server.port, dest=dest, tls=client_context(cert))
        assert (dest / "f.bin").read_bytes() == data and result.size == len(data)
        tree = getfile_tree.download_tree(".", port=server.port, dest=tmp_path / "tree", tls=client_context(cert))
        assert (tmp_path / "tree" / "f.bin").read_bytes() == data and not tree.failed
        with pytest.raises(ConnectError, match="certificate not accepted"):
            getfile.download("f.bin", port=server.port, dest=tmp_path, tls=client_context(None))


@pytest.mark.parametrize("model", ["thread", "fork", "asyncio"])
def test_busy_tls_server_says_busy(tmp_path, certificate, model):
    """Over --max-connections, a TLS server's refusal reads as 'busy' on the client: the thread and
    event-loop models answer inside TLS; the fork models refuse before the handshake, in plain
    text, and the client recognises that answer instead of reporting a failed handshake."""
    import socket

    from sockkit.errors import RemoteError
    from sockkit.testing import running

    root = tmp_path / "root"
    root.mkdir()
    (root / "f.txt").write_bytes(b"f\n")
    cert, key = certificate
    with running("getfile", "--port", "0", "--root", str(root), "--tls-cert", str(cert), "--tls-key", str(key),
                 "--quiet", "--model", model, "--max-connections", "1") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1"):
        with pytest.raises(RemoteError) as caught:
            getfile.download("f.txt", port=server.port, dest=tmp_path, tls=client_context(cert), timeout=10)
        assert caught.value.code == "busy"
        assert "busy" in str(caught.value)
        assert not (tmp_path / "f.txt").exists()
