"""The pytest plugin sockkit installs, used as a user would: a project outside the repository
with its own service and tests, run by a separate pytest that finds the plugin by its entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).parent

USER_TESTS = '''\
import socket
import ssl

import pytest

from sockkit.testing import read_line
from usersvc import Secret, Visitors


@pytest.fixture
def sockkit_service():
    return {"test_visitors": Visitors, "test_secret": Secret}[__name__]()


if __name__ == "test_visitors":
    def test_one_count_for_all_clients(sockkit_server, sockkit_model):
        seen = []
        for _ in range(3):
            with socket.create_connection(sockkit_server.address, timeout=10) as sock:
                seen.append(read_line(sock))
        assert seen == [b"you are visitor 1\\n", b"you are visitor 2\\n", b"you are visitor 3\\n"]
        assert sockkit_server.lines[0].endswith(f"({sockkit_model}) listening on 127.0.0.1:{sockkit_server.port}")
else:
    def test_over_tls(sockkit_server, sockkit_certificate):
        context = ssl.create_default_context(cafile=str(sockkit_certificate[0]))
        with socket.create_connection(sockkit_server.address, timeout=10) as raw, \\
                context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"psst\\n")
            assert read_line(sock) == b"PSST\\n"
'''


def test_a_users_tests_run_under_every_permitted_model(tmp_path):
    """Visitors (shared state) passes under 7 models and is skipped under fork, fork-signal and
    prefork with the refusal sentence; Secret (needs TLS) gets a certificate and passes under every
    model but select."""
    shutil.copy(HERE / "user_services.py", tmp_path / "usersvc.py")
    for name in ("test_visitors", "test_secret"):
        (tmp_path / f"{name}.py").write_text(USER_TESTS)
    done = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "-q", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    report = done.stdout
    assert done.returncode == 0, report + done.stderr
    assert report.splitlines()[-1].startswith("16 passed, 4 skipped"), report
    skipped = [line for line in report.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 4, report
    for model, how in [("fork", "runs each client in its own process"), ("fork-signal", "runs each client in its own "
                       "process"), ("prefork", "runs its clients in several worker processes")]:
        assert any(f"the visitors service keeps state shared by all its clients, but the {model} model {how}" in line
                   for line in skipped), report
    assert any("the secret service needs TLS, and the select model does not do TLS" in line for line in skipped)


def test_without_a_service_fixture_the_failure_says_what_to_do(tmp_path):
    (tmp_path / "test_forgot.py").write_text(textwrap.dedent("""\
        def test_forgot(sockkit_server):
            pass
        """))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "define a `sockkit_service` fixture returning your service to use `sockkit_server`" in done.stdout
