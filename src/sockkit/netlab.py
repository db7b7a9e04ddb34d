"""Private networks for tests: a ``front`` network namespace and N ``machine`` namespaces, each
machine joined to the front by its own veth pair with its own address, standing for separate hosts.

Rule: nothing touches the host's own network. Every namespace, link and address is created here,
inside namespaces created here, and removed on exit (deleting a namespace deletes its veth ends).
A test *enters* a namespace for a block (``with lab.inside(name):``): Linux keeps the network
namespace per thread, so a socket or a process created in that block lives in that namespace for
good, while the rest of the test process stays where it was. Fixed ports are fine in there: no one
else can see them.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator

from sockkit import libc

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_names = itertools.count()


def unavailable() -> str | None:
    """Why a lab cannot be built here (not root, no iproute2, no namespaces), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command is missing (Debian package iproute2)"
    if libc.function("setns") is None:
        return "libc has no setns"
    name = f"sk-probe-{os.getpid()}-{next(_names)}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()[:120]}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {done.stderr.strip()}")


#: Each namespace starts with the kernel's defaults, which suit a desktop, not a load test: a new
#: connection per request leaves the side that closes first in TIME_WAIT for 60 s, and with 28,000
#: ephemeral ports and no reuse outside loopback that caps a client (or HAProxy, towards its
#: servers) at ~470 new connections a second -- measured here: 649 req/s through HAProxy, with a
#: minimum latency of 10 ms, until these were set. A balancer host is tuned the same way.
SYSCTLS = {"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "1024 65535"}


def _tune(netns: str) -> None:
    for key, value in SYSCTLS.items():
        done = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", f"{key}={value}"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"sysctl {key}={value} in {netns}: {done.stderr.strip()}")


class Lab:
    """``front`` plus ``machines`` namespaces; machine i (from 1) is ``address(i)`` = 10.77.i.2,
    reached from the front through 10.77.i.1. Loopback is up everywhere."""

    def __init__(self, machines: int = 0) -> None:
        stem = f"sk-{os.getpid()}-{next(_names)}"
        self.front = f"{stem}-front"
        self.machines = [f"{stem}-m{i}" for i in range(1, machines + 1)]
        self._created: list[str] = []

    def address(self, machine: int) -> str:
        return f"10.77.{machine}.2"

    def __enter__(self) -> Lab:
        try:
            for name in (self.front, *self.machines):
                _ip("netns", "add", name)
                self._created.append(name)
                _ip("link", "set", "lo", "up", netns=name)
                _tune(name)
            for index, name in enumerate(self.machines, start=1):
                near, far = f"veth{index}", "eth0"
                _ip("link", "add", near, "type", "veth", "peer", "name", far, "netns", name, netns=self.front)
                _ip("addr", "add", f"10.77.{index}.1/24", "dev", near, netns=self.front)
                _ip("link", "set", near, "up", netns=self.front)
                _ip("addr", "add", f"{self.address(index)}/24", "dev", far, netns=name)
                _ip("link", "set", far, "up", netns=name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        while self._created:
            subprocess.run(["ip", "netns", "delete", self._created.pop()], capture_output=True)

    def add_address(self, name: str, address: str) -> None:
        """One more address of this namespace's own (on its loopback link: this kernel has no dummy
        links): another name for the same host."""
        _ip("addr", "add", f"{address}/32", "dev", "lo", netns=name)

    @contextlib.contextmanager
    def inside(self, name: str) -> Iterator[None]:
        """Run this thread in namespace ``name`` for the block (sockets and children made there stay)."""
        with enter(os.path.join(NETNS_DIR, name)):
            yield


@contextlib.contextmanager
def enter(netns_path: str) -> Iterator[None]:
    """This thread in the network namespace at ``netns_path``, then back where it was."""
    setns = libc.function("setns")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns_path} failed")
        try:
            yield
        finally:
            if setns(home, CLONE_NEWNET) != 0:  # a thread stranded in a lab would be worse than a crash
                os.abort()
    finally:
        os.close(target)
        os.close(home)
