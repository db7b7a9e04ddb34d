"""Loopback by default; beyond it only with TLS, a token, or an explicit --insecure."""

from __future__ import annotations

import subprocess

from sockkit.testing import exchange_line, running, sockkit_command


def test_default_bind_is_loopback():
    with running("echo", "--port", "0", "--quiet") as server:
        assert server.host == "127.0.0.1"


def test_wildcard_bind_in_clear_text_is_refused():
    done = subprocess.run(sockkit_command("serve", "echo", "--host", "0.0.0.0", "--port", "0"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "refusing to serve echo on 0.0.0.0" in done.stderr
    assert "--insecure" in done.stderr


def test_insecure_flag_allows_it_with_a_warning():
    with running("echo", "--host", "0.0.0.0", "--port", "0", "--quiet", "--insecure") as server:
        assert exchange_line(server.port, b"spam") == b"Echo=>spam\n"
