"""``serve --cpus``: keep a server whose threads share one GIL on one CPU.

Why: the threads of one CPython process take turns holding the GIL, so a second CPU cannot run
their Python code in parallel; what it adds is a cross-CPU wake-up at every hand-off, and a turn
lost whenever the next thread's CPU is busy with something else (on a 2-CPU machine, the load
client). Measured here, 10 connections x 1 KiB raw echo from the C load client, alternating runs:
the thread model went from 58-69k to 92-108k req/s and from 18-23 to 9-11 us of server CPU per
request when pinned; a bare ``socketserver.ThreadingTCPServer`` gains the same (58-63k -> 84-102k),
and the single-threaded select model gains nothing (it has no hand-offs). See docs/benchmarks.md.

What a second CPU is good for is work done without the GIL: OpenSSL encrypting for several
clients at once. ``auto`` therefore pins only the models whose registry entry says ``pin_cpu``
(thread, pool, socketserver with threads) and only without TLS; ``all`` never pins; a list (``1``
or ``0,2-3``) pins any model to exactly those CPUs.
"""

from __future__ import annotations

import os

from sockkit.catalog import Model


def parse_cpus(text: str) -> str | frozenset[int]:
    """``auto``, ``all``, or the set of CPUs a list like ``0,2-3`` names; ValueError otherwise."""
    text = text.strip().lower()
    if text in ("auto", "all"):
        return text
    cpus: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise ValueError(f"{text!r} is not auto, all or a CPU list like 0,2-3") from None
        if first < 0 or last < first or last > 4095:
            raise ValueError(f"bad CPU range {part.strip()!r}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def current_cpu() -> int | None:
    """The CPU this thread last ran on (``/proc/self/stat`` field 39), or None where unknown."""
    try:
        with open("/proc/thread-self/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        return int(fields[36])  # field 39; the first two (pid, comm) are before the ")"
    except (OSError, ValueError, IndexError):
        return None


def choose(setting: str | frozenset[int], model: Model, *, tls: bool) -> frozenset[int] | None:
    """The CPUs to pin this server to, or None to leave it where the system puts it. ``model`` is
    the registry entry as configured (``Model.configured``: socketserver --fork pins nothing)."""
    if not hasattr(os, "sched_setaffinity"):
        if isinstance(setting, frozenset):
            raise ValueError("--cpus with a CPU list needs Linux (sched_setaffinity)")
        return None
    if isinstance(setting, frozenset):
        allowed = os.sched_getaffinity(0)
        if not setting <= allowed:
            raise ValueError(f"--cpus: CPU {describe(setting - allowed)} is not available to this process")
        return setting
    if setting == "all" or not model.pin_cpu or tls:
        return None
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        return None
    here = current_cpu()
    return frozenset({here if here in allowed else min(allowed)})


def pin(cpus: frozenset[int]) -> None:
    """Pin every thread of this process (threads started later inherit it from their creator)."""
    try:
        tasks = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        tasks = [0]
    for task in tasks:
        try:
            os.sched_setaffinity(task, cpus)
        except ProcessLookupError:
            continue  # a thread that ended meanwhile


def describe(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))
