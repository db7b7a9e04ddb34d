"""Small process helpers shared by the forking models and the tests' expectations."""

from __future__ import annotations

import os
import signal

from sockkit import libc

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Ask Linux to send us ``signum`` when our parent dies, so no worker is left orphaned.

    ``parent``: the pid we were forked from (``os.getpid()`` read before the fork). If it already
    died before ``prctl`` ran, no signal will ever come: act on it now.
    """
    prctl = libc.function("prctl")
    if prctl is None:
        return  # not Linux: the parent's own shutdown still signals its children
    prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signum)


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap, not a fresh mmap. A server receives into buffers of
#: up to 256 KiB (asyncio reads 256 KiB at a time); glibc's default 128 KiB threshold turns each
#: such read into mmap + mremap + munmap (three syscalls per message, measured with strace -c:
#: a bare asyncio echo ran at a third of its speed because of it).
MMAP_THRESHOLD_BYTES = 1 << 20
#: Free heap kept before it is returned to the kernel; without it the same buffer is brk'ed and
#: trimmed on every read instead (two syscalls per message).
TRIM_THRESHOLD_BYTES = 4 << 20


def keep_receive_buffers_on_heap() -> None:
    """Raise glibc's mmap threshold so per-read buffers are recycled, not mapped and unmapped."""
    mallopt = libc.function("mallopt")
    if mallopt is None:
        return  # not glibc: nothing to tune
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
