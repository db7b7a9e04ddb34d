"""The select model's poller, on real sockets, with each backend this machine has (epoll and poll)."""

from __future__ import annotations

import select
import socket
import time

import pytest

from sockkit.models.selector import ERROR, READ, WRITE, Poller

BACKENDS = [pytest.param(True, id="epoll", marks=pytest.mark.skipif(not hasattr(select, "epoll"), reason="no epoll")),
            pytest.param(False, id="poll")]


def ready(poller: Poller, timeout: float = 0.5) -> dict[int, int]:
    return dict(poller.poll(timeout))


@pytest.mark.parametrize("use_epoll", BACKENDS)
def test_reports_readable_writable_and_hangup_as_asked(use_epoll: bool) -> None:
    left, right = socket.socketpair()
    poller = Poller(use_epoll)
    try:
        poller.register(left.fileno(), READ)
        assert ready(poller, 0.05) == {}  # nothing to read yet
        right.sendall(b"x")
        assert ready(poller) == {left.fileno(): READ}
        poller.modify(left.fileno(), WRITE)  # no longer asked for READ: only writability is reported
        assert ready(poller) == {left.fileno(): WRITE}
        poller.unregister(left.fileno())
        assert ready(poller, 0.05) == {}
        poller.register(left.fileno(), READ)
        right.close()
        events = ready(poller)[left.fileno()]
        assert events & READ or events & ERROR  # the peer's close wakes a reader
    finally:
        poller.close()
        left.close()
        right.close()


@pytest.mark.parametrize("use_epoll", BACKENDS)
def test_timeout_is_in_seconds(use_epoll: bool) -> None:
    poller = Poller(use_epoll)
    try:
        started = time.monotonic()
        assert poller.poll(0.2) == []
        assert 0.15 <= time.monotonic() - started < 5  # seconds, not milliseconds (poll's unit)
    finally:
        poller.close()
