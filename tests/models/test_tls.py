"""TLS under every model that carries it (--tls-cert/--tls-key), with a real certificate."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess

import pytest

from sockkit.catalog import MODELS, MODELS_WITHOUT_TLS
from sockkit.testing import running, sockkit_command
from tests.conftest import read_line

TLS_MODELS = [name for name in MODELS if name not in MODELS_WITHOUT_TLS]


def client_context(cert) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    return context


@pytest.mark.parametrize("model", TLS_MODELS)
def test_echo_over_tls(model, certificate):
    cert, key = certificate
    with running("echo", "--model", model, "--port", "0", "--quiet", "--tls-cert", str(cert),
                 "--tls-key", str(key)) as server:
        # A client that speaks no TLS at all must not stop the server from serving the next one.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
            plain.sendall(b"not a handshake\n")
            plain.settimeout(10)
            with contextlib.suppress(OSError):
                plain.recv(100)  # the server gives up on the handshake and closes
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            sock.sendall(b"secret spam\n")
            assert read_line(sock) == b"Echo=>secret spam\n"


def test_untrusted_certificate_is_refused_by_a_verifying_client(certificate):
    cert, key = certificate
    with running("echo", "--port", "0", "--quiet", "--tls-cert", str(cert), "--tls-key", str(key)) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.mark.parametrize("model", sorted(MODELS_WITHOUT_TLS))
def test_models_without_tls_refuse_clearly(model, certificate):
    cert, key = certificate
    done = subprocess.run(sockkit_command("serve", "echo", "--model", model, "--port", "0", "--tls-cert", str(cert),
                                          "--tls-key", str(key)), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "does not do TLS" in done.stderr


def test_half_configured_tls_is_an_error(certificate):
    cert, _ = certificate
    done = subprocess.run(sockkit_command("serve", "echo", "--port", "0", "--tls-cert", str(cert)),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--tls-cert and --tls-key go together" in done.stderr
