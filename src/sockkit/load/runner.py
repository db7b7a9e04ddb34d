"""``--processes P``: fork P workers, each with its own event loop and share of the plan, and merge.

One Python event loop tops out at one core; a server on the other core can outrun it. Workers are
forked before any loop exists (fork and a running loop do not mix), report their ``Stats`` as one
JSON document on a pipe, and publish a running request count in a shared page so the parent can
draw a progress line. The parent enforces the hard wall-clock cap: a worker still running past it
is killed by its PID.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import signal
import struct
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from sockkit.load.driver import drive
from sockkit.load.plan import LoadPlan
from sockkit.load.stats import Stats

SLOT = struct.Struct("<qq")  # per worker: requests done so far, 1 once measuring


@dataclass
class LoadResult:
    plan: LoadPlan
    processes: int
    stats: Stats
    #: The hard wall-clock cap cut the run short (figures cover what was done until then).
    cut: bool = False


Tick = Callable[[int, bool], None]  # (requests so far, measuring)


def run_load(plan: LoadPlan, processes: int = 1, progress: Tick | None = None,
             window: Callable[[str], None] | None = None) -> LoadResult:
    """Run ``plan``; ``window`` (one process only) is called with "start" and "end" of the measured window."""
    if processes < 1:
        raise ValueError("--processes must be at least 1")
    if processes > plan.connections:
        raise ValueError("--processes cannot exceed --connections (each worker needs a connection)")
    if processes == 1:
        hook = None if progress is None else (lambda stats, measuring: progress(stats.requests, measuring))
        stats, cut = drive(plan, hook, window)
        return LoadResult(plan, 1, stats, cut)
    return _run_forked(plan, processes, progress)


def _run_forked(plan: LoadPlan, processes: int, progress: Tick | None) -> LoadResult:
    shared = mmap.mmap(-1, SLOT.size * processes)
    workers: dict[int, tuple[int, int]] = {}  # pid -> (worker index, read end)
    for index in range(processes):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: run, report, leave without running the parent's cleanup
            code = 1
            try:
                os.close(read_end)
                _work(plan.share(index, processes), index, shared, write_end)
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        workers[pid] = (index, read_end)
    deadline = time.monotonic() + plan.wall_limit + 5
    chunks: dict[int, list[bytes]] = {fd: [] for _, fd in workers.values()}
    open_fds = set(chunks)
    cut = False
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                cut = True
                break
            ready, _, _ = select.select(list(open_fds), [], [], min(0.25, left))
            for fd in ready:
                data = os.read(fd, 1 << 16)
                if data:
                    chunks[fd].append(data)
                else:
                    open_fds.discard(fd)
            if progress is not None:
                slots = [SLOT.unpack_from(shared, i * SLOT.size) for i in range(processes)]
                progress(sum(done for done, _ in slots), all(m for _, m in slots))
    finally:
        for pid in workers:
            if open_fds:  # cut by the cap or interrupted: the workers' results are not coming
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for _, fd in workers.values():
            os.close(fd)
        shared.close()
    merged = Stats()
    for parts in chunks.values():
        if not parts:
            cut = True  # this worker died or was killed before it reported
            continue
        report = json.loads(b"".join(parts))
        merged.merge(Stats.from_dict(report["stats"]))
        cut = cut or report["cut"]
    return LoadResult(plan, processes, merged, cut)


def _work(plan: LoadPlan, index: int, shared: mmap.mmap, out: int) -> None:
    with suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it reports what was done

    def publish(stats: Stats, measuring: bool) -> None:
        SLOT.pack_into(shared, index * SLOT.size, stats.requests, int(measuring))

    stats, cut = drive(plan, publish)
    data = json.dumps({"stats": stats.to_dict(), "cut": cut}).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(out, view):]
    os.close(out)
