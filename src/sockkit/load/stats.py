"""What one load worker counts; worker results merge into one."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from sockkit.load.histogram import Histogram

COUNTERS = ("requests", "bytes", "connects", "refused", "reset", "timeouts", "wrong_replies", "closed_early",
            "errors")


@dataclass
class Stats:
    latency: Histogram = field(default_factory=Histogram)
    connect: Histogram = field(default_factory=Histogram)
    requests: int = 0  # replies complete and correct, in the measured window
    bytes: int = 0  # payload bytes of those requests (one direction)
    connects: int = 0
    refused: int = 0  # connect got ECONNREFUSED (nothing listening, or the backlog overflowed)
    reset: int = 0  # ECONNRESET / EPIPE on a connection or while connecting
    timeouts: int = 0  # connects or replies that took longer than --timeout
    wrong_replies: int = 0  # bytes that are not the echo of what was sent (or more than was sent)
    closed_early: int = 0  # the server closed a connection with requests unanswered
    errors: int = 0  # any other OSError
    elapsed: float = 0.0  # seconds of the measured window, until the last reply
    cpu: float = 0.0  # user + system seconds this process used in the measured window

    def reset_window(self) -> None:
        """Warmup is over: forget what was measured so far (connect times are kept)."""
        self.latency.clear()  # in place: the driver holds a reference to its counters
        self.requests = self.bytes = 0

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("latency", "connect")}
        out["latency"] = self.latency.to_dict()
        out["connect"] = self.connect.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Stats:
        stats = cls(latency=Histogram.from_dict(data["latency"]), connect=Histogram.from_dict(data["connect"]))
        for name in (*COUNTERS, "elapsed", "cpu"):
            setattr(stats, name, data[name])
        return stats

    def merge(self, other: Stats) -> Stats:
        """Workers ran side by side: counts and CPU add up, the window is the longest one."""
        self.latency.merge(other.latency)
        self.connect.merge(other.connect)
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.elapsed = max(self.elapsed, other.elapsed)
        self.cpu += other.cpu
        return self

    @property
    def failures(self) -> int:
        return self.refused + self.reset + self.timeouts + self.wrong_replies + self.closed_early + self.errors
