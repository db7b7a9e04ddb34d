"""Listening sockets handed over by another process: systemd's socket activation, and our own reload.

Both speak one protocol, systemd's ``sd_listen_fds(3)``: the sockets are descriptors 3, 4, ...
``3 + LISTEN_FDS - 1``, meant for the process whose pid is ``LISTEN_PID``. A reload (SIGHUP, see
``lifecycle.Reload``) starts the new server through this module's own ``__main__``, a trampoline
that moves the listeners to 3, 4, ..., sets the variables with its own pid and execs ``sockkit
serve`` with the same arguments, so the new server is started exactly as systemd would start it.

Rule: a socket is never closed between the two servers. The new one holds its copies before the
old one closes its own, so a client connecting in between waits in the listen queue, never meets a
refusal. Rule: the variables are removed once read, so a process we start does not take our
sockets for its own; and they are believed only by the process they name.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys

#: sd_listen_fds: the first descriptor passed.
SD_LISTEN_FDS_START = 3
#: Set for the new server by a reload: the pid of the server it replaces, told to stop (SIGTERM)
#: once the new one is serving.
REPLACES = "SOCKKIT_REPLACES"


class ActivationError(ValueError):
    """The environment says sockets were passed, but what is there is not a listening TCP socket."""


def inherited_listeners(environ: dict | None = None) -> list[socket.socket]:
    """The listening sockets passed to this process (LISTEN_FDS/LISTEN_PID), or [] if none were."""
    environ = os.environ if environ is None else environ
    pid, count = environ.pop("LISTEN_PID", None), environ.pop("LISTEN_FDS", None)
    environ.pop("LISTEN_FDNAMES", None)
    if count is None or pid is None:
        return []
    try:
        if int(pid) != os.getpid():
            return []  # meant for another process (we inherited its environment)
        number = int(count)
    except ValueError:
        raise ActivationError(f"LISTEN_PID={pid!r} LISTEN_FDS={count!r}: not numbers") from None
    if not 0 <= number <= 1024:
        raise ActivationError(f"LISTEN_FDS={number}: not a plausible number of sockets")
    listeners = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + number):
        try:
            sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
        except OSError as exc:
            raise ActivationError(f"descriptor {fd} passed in LISTEN_FDS is not a socket ({exc.strerror})") from None
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6) \
                or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise ActivationError(f"descriptor {fd} passed in LISTEN_FDS is not a listening TCP socket")
        os.set_inheritable(fd, False)
        listeners.append(sock)
    return listeners


def successor_command(argv: list[str], listeners: list[socket.socket]) -> list[str]:
    """The command that starts a new ``sockkit ARGV`` with ``listeners`` passed as LISTEN_FDS."""
    fds = ",".join(str(sock.fileno()) for sock in listeners)
    return [sys.executable, "-m", "sockkit.activation", fds, "--", sys.executable, "-m", "sockkit", *argv]


def take_over() -> None:
    """Once serving: tell a service manager (READY=1), and if a reload started us, replace the
    server that did. The manager learns our pid (MAINPID) before the old server is told to stop
    (SIGTERM: it drains as on any stop), so it never sees its main process exit. Only our own
    parent is believed as the server to replace, so a stale or forged pid stops no one."""
    text = os.environ.pop(REPLACES, None)
    if not text or not text.isdigit() or int(text) != os.getppid():
        notify("READY=1")
        return
    notify(f"MAINPID={os.getpid()}\nREADY=1")
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.kill(int(text), signal.SIGTERM)


def notify(state: str) -> bool:
    """sd_notify(3): tell the service manager ``state`` (``READY=1``, ``MAINPID=N``...) if one listens."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or path[0] not in "/@":
        return False
    address = "\0" + path[1:] if path[0] == "@" else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def _trampoline(argv: list[str]) -> None:
    """``python -m sockkit.activation FD,FD,... -- COMMAND ...``: the descriptors to 3, 4, ..., the
    LISTEN_* variables for this very process, then exec COMMAND (which keeps the pid)."""
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python -m sockkit.activation FD,FD,... -- COMMAND ...")
    fds_text, _, *command = argv
    fds = [int(fd) for fd in fds_text.split(",") if fd]
    # Out of the way first (above every target), then down to 3, 4, ...: no source is overwritten.
    high = [_dup_above(fd, SD_LISTEN_FDS_START + len(fds)) for fd in fds]
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    for index, fd in enumerate(high):
        os.dup2(fd, SD_LISTEN_FDS_START + index, inheritable=True)
        os.close(fd)
    os.environ.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()))
    os.execv(command[0], command)


def _dup_above(fd: int, lowest: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)


if __name__ == "__main__":
    _trampoline(sys.argv[1:])
