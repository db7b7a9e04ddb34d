"""libc functions Python's os module lacks (renameat2, sync_file_range, prctl, mallopt), via ctypes.

ctypes is imported on the first lookup: ~3 ms that a download to /dev/null or a listing never pays.
"""

from __future__ import annotations

import functools


@functools.cache
def function(name: str):
    """libc's function ``name`` (errno kept, for ``ctypes.get_errno``), or None where there is none."""
    import ctypes

    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
