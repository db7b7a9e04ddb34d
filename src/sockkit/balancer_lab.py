"""A tested deployment: Debian's HAProxy with ``deploy/haproxy/haproxy.cfg`` in front of sockkit
servers, each on a machine of its own (a network namespace with its own address, see ``netlab``),
and a client machine to drive it from. Used by the reliability rows, the benchmark and the tests.

Machines 1..N each run an echo server (port 50007) and, if asked, a getfile server (50001) on
10.77.i.2; HAProxy runs in the front namespace and reaches machine i through 10.77.i.1; the client
machine (N+1) reaches HAProxy's front ends at ``front`` = 10.77.(N+1).1. The servers trust only
their own gateway as a proxy, so each logs the client machine's address, 10.77.(N+1).2.

Rule: the lab cleans up after itself, whatever happened: servers, HAProxy, then the namespaces.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from sockkit import netlab
from sockkit.testing import RunningServer, alive, reload, start_server, stop_pid

HAPROXY = "/usr/sbin/haproxy"
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
ECHO_PORT = 50007
GETFILE_PORT = 50001
#: HAProxy's check interval in the configuration, and how many checks change a server's state.
CHECK_SECONDS = 0.5
CHECKS_TO_CHANGE = 2


def unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    if not os.path.exists(HAPROXY):
        return f"{HAPROXY} is not installed (Debian package haproxy)"
    if not CONFIG.exists():
        return f"{CONFIG} is missing"
    return netlab.unavailable()


class Machine:
    """One server machine: its namespace, address and the sockkit servers on it."""

    def __init__(self, lab: BalancerLab, index: int) -> None:
        self.lab = lab
        self.index = index
        self.netns = lab.net.machines[index - 1]
        self.address = lab.net.address(index)
        self.gateway = f"10.77.{index}.1"
        self.echo: RunningServer | None = None
        self.getfile: RunningServer | None = None
        #: pids of servers that replaced ours in a reload (not our children: stopped by pid).
        self.successors: dict[str, int] = {}

    def start(self, service: str) -> RunningServer:
        args = list(self.lab.echo_args if service == "echo" else self.lab.getfile_args)
        port = ECHO_PORT if service == "echo" else GETFILE_PORT
        extra = ["--proxy-protocol", "--trusted-proxy", self.gateway] if self.lab.proxy_protocol else []
        with self.lab.net.inside(self.netns):
            server = start_server(service, "--host", self.address, "--port", str(port), "--insecure", *extra, *args)
        setattr(self, service, server)
        self.successors.pop(service, None)
        return server

    def server(self, service: str) -> RunningServer:
        server = getattr(self, service)
        if server is None:
            raise RuntimeError(f"no {service} server running on machine {self.index}")
        return server

    def pid(self, service: str) -> int:
        return self.successors.get(service) or self.server(service).pid

    def reload(self, service: str) -> int:
        """SIGHUP; returns once the old process has drained and exited (the new pid). A server that
        is itself a reload's successor (not our child) is signalled by its pid; its successor prints
        into the same log."""
        if service not in self.successors:
            self.successors[service] = reload(self.server(service))
            return self.successors[service]
        old, lines = self.successors[service], self.server(service).lines
        seen = len(lines)
        os.kill(old, signal.SIGHUP)
        deadline = time.monotonic() + 30
        new = None
        while new is None or alive(old):
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {old} did not reload within 30 s after SIGHUP")
            if new is None:
                found = [match for line in lines[seen:] if (match := re.search(r"new server pid (\d+)", line))]
                new = int(found[0].group(1)) if found else None
            time.sleep(0.02)
        self.successors[service] = new
        return new

    def stop(self, service: str) -> None:
        """SIGTERM and wait: in-flight requests finish, then the process exits."""
        if service in self.successors:
            stop_pid(self.successors.pop(service))
            self.server(service).kill()
        else:
            assert self.server(service).stop() == 0
        setattr(self, service, None)

    def kill(self, service: str) -> None:
        """SIGKILL, as a crash or a pulled plug: nothing is drained."""
        pid = self.pid(service)
        os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.successors.pop(service, None)
        self.server(service).kill()
        setattr(self, service, None)

    def close(self) -> None:
        for service in ("echo", "getfile"):
            with contextlib.suppress(Exception):
                if service in self.successors:
                    stop_pid(self.successors.pop(service))
            server = getattr(self, service)
            if server is not None:
                server.kill()
                setattr(self, service, None)

    def logged_clients(self, service: str) -> list[str]:
        """The client addresses this server's log lines name (the chapter's line)."""
        lines = self.server(service).lines
        return [match.group(1) for line in lines if (match := re.search(r"connected by \('([^']*)'", line))]


class Connection(NamedTuple):
    """One line of HAProxy's tcplog: ``client [date] frontend backend/server Tw/Tc/Tt bytes state ...``."""

    client: str
    backend: str
    server: str
    #: Milliseconds: waiting in queues, connecting to the server (-1: never connected), in all.
    connect_ms: int
    total_ms: int
    #: Bytes sent from the server to the client: 0 for a client that got no answer at all.
    bytes: int
    #: Two letters: who ended it and in which phase (``--``: normally; ``SD``: the server went away
    #: during the data phase; ``CD``: the client did ...).
    state: str
    retries: int

    _LINE = re.compile(r"^(\S+) \[[^\]]+\] \S+ ([^/\s]+)/(\S+) (-?\d+)/(-?\d+)/\+?(-?\d+) \+?(\d+) (\S\S) "
                       r"\d+/\d+/\d+/\d+/\+?(\d+)")

    @classmethod
    def parse(cls, line: str) -> Connection | None:
        match = cls._LINE.match(line.strip())
        if match is None:
            return None
        client, backend, server, _, connect, total, sent, state, retries = match.groups()
        return cls(client, backend, server, int(connect), int(total), int(sent), state, int(retries))

    @property
    def unanswered(self) -> bool:
        """The client got not one byte back. (The termination state cannot tell: a server killed
        with -9 closes its connections with a FIN, which HAProxy passes on as a normal end.)"""
        return self.bytes == 0


class BalancerLab:
    """``with BalancerLab(3) as lab:`` -- servers up and seen UP by HAProxy's checks."""

    def __init__(self, servers: int = 3, *, getfile_root: str | None = None, proxy_protocol: bool = True,
                 echo_args: tuple[str, ...] = (), getfile_args: tuple[str, ...] = ()) -> None:
        self.count = servers
        self.net = netlab.Lab(servers + 1)
        self.proxy_protocol = proxy_protocol
        self.echo_args = ("--model", "uvloop", *echo_args)
        self.getfile_args = ("--root", getfile_root, *getfile_args) if getfile_root else ()
        self.client = servers + 1
        self.front = f"10.77.{self.client}.1"
        self.client_address = self.net.address(self.client)
        self.machines: list[Machine] = []
        self.haproxy: subprocess.Popen | None = None
        self._work = tempfile.TemporaryDirectory(prefix="sockkit-haproxy-")
        self.admin = os.path.join(self._work.name, "admin.sock")

    def __enter__(self) -> BalancerLab:
        self.net.__enter__()
        try:
            self.machines = [Machine(self, index) for index in range(1, self.count + 1)]
            for machine in self.machines:
                machine.start("echo")
                if self.getfile_args:
                    machine.start("getfile")
            self._start_haproxy()
            for machine in self.machines:
                self.wait_state(f"echo_servers/s{machine.index}", "UP")
                if self.getfile_args:
                    self.wait_state(f"getfile_servers/g{machine.index}", "UP")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.haproxy is not None:
            if self.haproxy.poll() is None:
                self.haproxy.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.haproxy.wait(10)
            if self.haproxy.poll() is None:
                self.haproxy.kill()
                self.haproxy.wait()
            self.haproxy = None
        for machine in self.machines:
            machine.close()
        self.net.close()
        self._work.cleanup()

    def _config(self) -> str:
        text = CONFIG.read_text()
        if not self.proxy_protocol:
            text = text.replace("send-proxy-v2 ", "")
        if not self.getfile_args:
            text = text[:text.index("frontend getfile")]
        # Only the servers this lab has: the configuration names three machines.
        for index in range(self.count + 1, 4):
            text = "\n".join(line for line in text.splitlines() if f"${{SOCKKIT_S{index}}}" not in line) + "\n"
        path = os.path.join(self._work.name, "haproxy.cfg")
        Path(path).write_text(text)
        return path

    def _start_haproxy(self) -> None:
        env = {**os.environ, "SOCKKIT_ADMIN": self.admin, "SOCKKIT_ECHO_FRONT": f"{self.front}:{ECHO_PORT}",
               "SOCKKIT_GETFILE_FRONT": f"{self.front}:{GETFILE_PORT}"}
        for machine in self.machines:
            env[f"SOCKKIT_S{machine.index}"] = machine.address
        for index in range(self.count + 1, 4):
            env[f"SOCKKIT_S{index}"] = "127.0.0.1"  # lines removed from the config; the variable must exist
        self.log_path = os.path.join(self._work.name, "haproxy.log")
        with self.net.inside(self.net.front), open(self.log_path, "w") as log:
            self.haproxy = subprocess.Popen([HAPROXY, "-f", self._config(), "-db"], env=env,
                                            stdout=log, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.admin):
            if self.haproxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: {self.haproxy.stderr.read()[-500:]}")
            time.sleep(0.02)

    def connections(self) -> list[Connection]:
        """HAProxy's log so far, one ``Connection`` per ended client connection."""
        with open(self.log_path) as log:
            return [conn for line in log if (conn := Connection.parse(line)) is not None]

    # -- HAProxy's runtime API ----------------------------------------------------------------------
    def command(self, line: str) -> str:
        deadline = time.monotonic() + 5
        while True:  # the socket file appears a moment before HAProxy listens on it
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(5)
                sock.connect(self.admin)
                break
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        with sock:
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, str]:
        """``backend/server`` -> UP, DOWN, MAINT or DRAIN, from ``show servers state``."""
        result = {}
        for line in self.command("show servers state").splitlines():
            fields = line.split()
            if len(fields) > 6 and fields[0].isdigit():
                backend, server, operational, admin = fields[1], fields[3], fields[5], int(fields[6])
                state = {"0": "DOWN", "1": "STARTING", "2": "UP", "3": "STOPPING"}.get(operational, "?")
                if admin & 0x1 or admin & 0x4 or admin & 0x20:
                    state = "MAINT"
                elif admin & 0x8:
                    state = "DRAIN"
                result[f"{backend}/{server}"] = state
        return result

    def wait_state(self, name: str, state: str, timeout: float = 20.0) -> float:
        """Seconds until HAProxy sees ``name`` (backend/server) in ``state``."""
        began = time.monotonic()
        while (current := self.states().get(name)) != state:
            if time.monotonic() - began > timeout:
                raise AssertionError(f"{name} is {current}, not {state}, after {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - began

    def sessions(self, backend: str, server: str) -> int:
        """Connections HAProxy has open to ``backend/server`` now (``show stat``'s scur)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            fields = line.split(",")
            if fields[:2] == [backend, server]:
                return int(fields[header.index("scur")] or 0)
        raise KeyError(f"{backend}/{server}")

    @contextlib.contextmanager
    def on_client(self) -> Iterator[None]:
        """Run this thread on the client machine (sockets and processes made here are the client's)."""
        with self.net.inside(self.net.machines[self.client - 1]):
            yield
