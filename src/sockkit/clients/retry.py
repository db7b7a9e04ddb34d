"""Trying a transfer again after the network failed it: which failures, and how long to wait.

Rule: only what another attempt can fix is retried: a connection refused, reset or timed out, a
transfer cut short or stalled, a busy server. A wrong digest, a missing file, a local disk problem,
a refused certificate or token, a protocol violation and Ctrl-C end it at once. Resuming is the
getfile client's own (``.part`` + digest): an attempt that reaches a server holding the same
version continues where the last one stopped, one that finds another version starts over, and
nothing is ever spliced -- behind a balancer the next attempt may well reach another server.

Rule: bounded. At most ``retries`` more attempts, the waits doubling from FIRST_DELAY up to
MAX_DELAY, each drawn within +-25 % so that clients cut off together do not return together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from sockkit.errors import Cancelled, RemoteError, TransferInterrupted, Unreachable

if TYPE_CHECKING:  # neither is imported by a get that never retries (~1 ms of start-up)
    import random
    import threading

#: The first wait, and the longest: 0.5, 1, 2, 4, 8, 8, ... seconds (as curl's --retry doubles its
#: wait, with a lower ceiling: a restarted server or a balancer's health check takes seconds).
FIRST_DELAY = 0.5
MAX_DELAY = 8.0
#: Most retries a command line may ask for.
MAX_RETRIES = 1000

T = TypeVar("T")


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, TransferInterrupted | Unreachable):
        return True
    return isinstance(exc, RemoteError) and exc.code == "busy"


def delay(retry: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (from 1)."""
    import random

    base = min(MAX_DELAY, FIRST_DELAY * 2 ** min(retry - 1, 16))
    return base * (rng or random).uniform(0.75, 1.25)


def with_retries(attempt: Callable[[], T], retries: int, *,
                 on_retry: Callable[[BaseException, int, float], None] | None = None,
                 cancel: threading.Event | None = None, rng: random.Random | None = None,
                 wait_for: Callable[[int], float] | None = None) -> T:
    """``attempt()``, and again up to ``retries`` times after a retryable failure.

    ``on_retry(exc, retry, seconds)`` is told before each wait. The last failure is raised as is.
    ``wait_for(retry)`` replaces the back-off (tests).
    """
    for retry in range(1, retries + 2):
        try:
            return attempt()
        except Exception as exc:
            if retry > retries or not retryable(exc):
                raise
            wait = delay(retry, rng) if wait_for is None else wait_for(retry)
            if on_retry is not None:
                on_retry(exc, retry, wait)
            if cancel is not None:
                if cancel.wait(wait):
                    raise Cancelled("cancelled") from exc
            else:
                time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises
