"""deploy/: the HAProxy configuration and the systemd units are valid for the real tools, and the
service unit's command line serves on the socket unit's address (the deployment itself is
exercised by the reliability rows haproxy-*)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sockkit import netlab

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


def unit_setting(unit: str, key: str) -> str:
    """A setting of a unit file under deploy/systemd, continuation lines joined."""
    text = (DEPLOY / "systemd" / unit).read_text().replace("\\\n", " ")
    return re.search(rf"^{key}=(.*)$", text, re.MULTILINE).group(1)


def test_the_service_units_command_serves_on_the_socket_units_address(tmp_path, socket_activate):
    """What systemd would do with the two units: ``systemd-socket-activate`` listens where the socket
    unit says (0.0.0.0:50001) and runs the service unit's ExecStart, word for word but for the paths,
    with the token its EnvironmentFile would set. The server must start (beyond loopback in clear
    text it refuses unless told: behind HAProxy with the PROXY protocol, TLS is not an option yet),
    and answer a client that HAProxy (the trusted proxy) names in a PROXY header."""
    tool = socket_activate
    (tmp_path / "notes.txt").write_bytes(b"shared notes\n")
    argv = shlex.split(unit_setting("sockkit-getfile.service", "ExecStart"))
    assert argv[:1] == ["/opt/sockkit/.venv/bin/sockkit"] and "/srv/shared" in argv
    argv = [sys.executable, "-m", "sockkit", *[str(tmp_path) if word == "/srv/shared" else word for word in argv[1:]]]
    listen = unit_setting("sockkit-getfile.socket", "ListenStream")
    balancer = argv[argv.index("--trusted-proxy") + 1]
    port = int(listen.rsplit(":", 1)[1])
    with netlab.Lab() as lab, lab.inside(lab.front):
        lab.add_address(lab.front, balancer)
        process = subprocess.Popen([tool, "-l", listen, "-E", "SOCKKIT_TOKEN", "--", *argv],
                                   env={**os.environ, "SOCKKIT_TOKEN": "unit-token"},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "Listening on" in process.stderr.readline()
            reply = b""
            with socket.socket() as client, contextlib.suppress(OSError):  # a refusal shows in err below
                client.settimeout(20)
                client.bind((balancer, 0))  # as HAProxy would connect, from the trusted address
                client.connect((balancer, port))
                header = f"PROXY TCP4 203.0.113.9 {balancer} 51234 {port}\r\n".encode()  # the spec's v1 line
                client.sendall(header + b"GET /notes.txt HTTP/1.1\r\nHost: x\r\n"
                               b"Authorization: Bearer unit-token\r\nConnection: close\r\n\r\n")
                while chunk := client.recv(65536):
                    reply += chunk
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nshared notes\n"), (reply[:300], err)
    assert process.returncode == 0, err
