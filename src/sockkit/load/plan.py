"""What a load run does, decided once before any socket opens: a frozen ``LoadPlan``.

Payloads and the replies expected for them are built here, once per size, so the hot loop only
hands the same ``bytes`` objects to ``transport.write`` (no per-message allocation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sockkit.services.echo import PREFIX

#: Every run stops by itself; this bounds a run given neither --duration nor --requests... which the
#: command refuses anyway, and caps a --requests run that the server answers too slowly.
DEFAULT_TIME_LIMIT = 600.0
#: Hard cap beyond the planned warmup + duration: time to drain replies in flight and report.
GRACE_SECONDS = 10.0


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"1024"`` or a mix ``"64,1024,65536"`` (used in turn by each connection); sizes are >= 1."""
    sizes = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    if not sizes or min(sizes) < 1:
        raise ValueError("sizes must be positive byte counts, e.g. 1024 or 64,1024,65536")
    return sizes


@dataclass(frozen=True)
class LoadPlan:
    host: str
    port: int
    connections: int = 10
    sizes: tuple[int, ...] = (1024,)
    #: Seconds of measured load (after warmup); None: until ``requests`` are done.
    duration: float | None = None
    #: Requests to complete in the measured window; None: until ``duration`` is over.
    requests: int | None = None
    #: Open loop: total requests per second on a fixed schedule; None: closed loop.
    rate: float | None = None
    #: True: byte-exact echo (RFC 862). False: the chapter's line echo, every reply checked.
    raw: bool = False
    #: Raw mode: also compare each reply's content with what was sent (costs a memcmp per read).
    verify: bool = False
    warmup: float = 0.0
    #: A new connection for every request (connect, one exchange, close).
    churn: bool = False
    #: A reply not complete this long after its (intended) send counts as a timeout; the connection is dropped.
    timeout: float = 5.0
    connect_timeout: float = 5.0
    #: Hard wall-clock cap for the whole run, whatever happens.
    time_limit: float = DEFAULT_TIME_LIMIT
    loop: str = "auto"  # "uvloop", "asyncio" or "auto" (uvloop when installed)

    def __post_init__(self) -> None:
        if self.duration is None and self.requests is None:
            raise ValueError("a load run needs --duration and/or --requests")
        if self.connections < 1:
            raise ValueError("--connections must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("--duration must be positive")
        if self.requests is not None and self.requests < 1:
            raise ValueError("--requests must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("--rate must be positive")
        if not 0 < self.time_limit <= 3600:
            raise ValueError("--time-limit must be in (0, 3600] seconds")
        if self.warmup < 0:
            raise ValueError("--warmup must be zero or more")

    @property
    def wall_limit(self) -> float:
        """Seconds after which the run is cut whatever state it is in."""
        planned = self.warmup + (self.duration if self.duration is not None else self.time_limit)
        return min(self.time_limit, planned + GRACE_SECONDS)

    def payloads(self) -> list[bytes]:
        """One payload per size. Line mode ends each with a newline, so it is one message."""
        out = []
        for i, size in enumerate(self.sizes):
            fill = bytes([0x61 + i % 26]) * size
            out.append(fill if self.raw else fill[:-1] + b"\n")
        return out

    def replies(self) -> list[bytes]:
        """The reply each payload must get back."""
        return self.payloads() if self.raw else [PREFIX + p for p in self.payloads()]

    def share(self, worker: int, workers: int) -> LoadPlan:
        """This worker's part of the plan when ``workers`` processes split it."""
        def part(total: int) -> int:
            return total // workers + (1 if worker < total % workers else 0)

        return replace(self, connections=max(1, part(self.connections)),
                       requests=None if self.requests is None else max(1, part(self.requests)),
                       rate=None if self.rate is None else self.rate / workers)
