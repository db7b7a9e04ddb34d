"""What getfile uploads leave on disk, for the getfile tests and the reliability suite."""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from sockkit.services.getfile.root import is_reserved


def held_uploads(root: str | Path, pids: Iterable[int]) -> list[str]:
    """The files uploads hold under ``root``: names reserved for uploads on disk, and unnamed
    (``O_TMPFILE``) files one of ``pids`` has open there (/proc shows ``DIR/#INODE (deleted)``)."""
    held = [name for _, _, names in os.walk(root) for name in names if is_reserved(name)]
    for pid in pids:
        with suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(f"{root}/") and target.endswith(" (deleted)"):
                        held.append(target)
    return held
