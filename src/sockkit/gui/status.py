"""The window's event log for tests and scripts: one JSON object per line (``--status-file``).

A test cannot see pixels change, so the window says what it did: ``ready`` (with the screen
position of its buttons), ``progress`` (with a percent), ``tick`` (a heartbeat timer that only
fires if the Tk loop is running), ``configure`` (the window was resized and laid out again),
``dialog``, ``listing``, ``done``, ``error``, ``cancelled``, ``closed``. Every line is flushed
at once, so a reader polling the file sees events as they happen.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any


class StatusLog:
    """Appends events to a file; with no file, does nothing (the normal, interactive case)."""

    def __init__(self, path: str | Path | None) -> None:
        self.out: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.start = time.monotonic()

    def emit(self, event: str, **fields: Any) -> None:
        if self.out is None:
            return
        record = {"event": event, "t": round(time.monotonic() - self.start, 3), **fields}
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
