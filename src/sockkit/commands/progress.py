"""How a command shows a transfer's progress: a tqdm bar, JSON lines, or nothing.

``--progress json`` prints one object per line on stdout, for programs (the GUI's subprocess
mode): ``{"done": N, "total": N, "speed": B/s, "eta": s|null}`` while running, then
``{"done": N, "total": N, "path": "..."}`` on success or ``{"error": "one line"}`` on failure
(with ``"silent": true`` when the server closed without a word, as the chapter's own server does:
``--legacy`` may then work); ``{"connected": true}`` once the connection is up, before the server
answers; with ``--retry``, ``{"retrying": "why", "retry": N, "wait": s}`` before each new attempt.
The human summary line then goes to stderr so stdout stays pure JSON.
"""

from __future__ import annotations

import sys

from sockkit.clients.getfile import Progress


class ProgressPrinter:
    """Callable as a ``progress`` callback; ``mode`` is auto, bar, json or none."""

    def __init__(self, mode: str) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "none"
        self.mode = mode
        self.bar = None

    def __call__(self, progress: Progress) -> None:
        if self.mode == "json":
            eta = None if progress.eta is None else round(progress.eta, 2)
            self._json({"done": progress.done, "total": progress.total, "speed": round(progress.speed), "eta": eta})
        elif self.mode == "bar":
            if self.bar is None:
                from tqdm import tqdm  # only on a terminal: keeps `sockkit get` quick to start otherwise

                self.bar = tqdm(total=progress.total, initial=progress.resumed_from, unit="B", unit_scale=True,
                                unit_divisor=1024, dynamic_ncols=True, file=sys.stderr, leave=False)
            self.bar.total = progress.total
            self.bar.update(progress.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def done(self, done: int, total: int, path: str) -> None:
        if self.mode == "json":
            self._json({"done": done, "total": total, "path": path})

    def error(self, message: str, silent: bool = False) -> None:
        if self.mode == "json":
            self._json({"error": message, "silent": True} if silent else {"error": message})

    def connected(self) -> None:
        if self.mode == "json":
            self._json({"connected": True})

    def retrying(self, why: str, retry: int, retries: int, wait: float) -> None:
        """An attempt failed and another follows: one line on stderr (the bar starts afresh)."""
        self.close()
        if self.mode == "json":
            self._json({"retrying": why, "retry": retry, "wait": round(wait, 2)})
        print(f"sockkit get: {why}; retry {retry} of {retries} in {wait:.1f} s", file=sys.stderr, flush=True)

    def say(self, line: str) -> None:
        print(line, file=sys.stderr if self.mode == "json" else sys.stdout, flush=True)

    @staticmethod
    def _json(obj: dict) -> None:
        import json  # here: only --progress json needs it

        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
