"""deploy/: the HAProxy configuration and the systemd units are valid for the real tools (the
deployment itself is exercised by the reliability rows haproxy-*)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_haproxy_accepts_the_configuration(tmp_path):
    """``haproxy -c``: the configuration parses, with the variables a deployment sets."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(haproxy):
        pytest.skip("haproxy is not installed (Debian package haproxy)")
    env = {**os.environ, "SOCKKIT_ADMIN": str(tmp_path / "admin.sock"), "SOCKKIT_ECHO_FRONT": "127.0.0.1:50007",
           "SOCKKIT_GETFILE_FRONT": "127.0.0.1:50001", "SOCKKIT_S1": "10.0.0.11", "SOCKKIT_S2": "10.0.0.12",
           "SOCKKIT_S3": "10.0.0.13"}
    done = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr


def test_systemd_accepts_the_units(tmp_path):
    """``systemd-analyze verify`` on the socket and service units (ExecStart pointed at this sockkit)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    sockkit = Path(sys.executable).with_name("sockkit")
    for unit in ("sockkit-getfile.socket", "sockkit-getfile.service"):
        text = (DEPLOY / "systemd" / unit).read_text().replace("/opt/sockkit/.venv/bin/sockkit", str(sockkit))
        (tmp_path / unit).write_text(text)
    done = subprocess.run([analyze, "verify", str(tmp_path / "sockkit-getfile.socket"),
                           str(tmp_path / "sockkit-getfile.service")], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "sockkit-getfile" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
