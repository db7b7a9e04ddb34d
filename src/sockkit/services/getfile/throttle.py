"""Wrong tokens, counted per source address and slowed down: guessing the token takes forever.

Rules:
- Each source (an IPv4 address; an IPv6 /64, which one machine usually holds whole) has a bucket
  of ``BURST`` tries, refilled by one every ``REFILL`` seconds. A wrong token takes one try; a
  source with none left is told to wait, and its token is not even compared -- so guessing from
  one source runs at one guess a second, where it ran at ~2,800/s (thread) and ~6,100/s (uvloop).
  A right token costs nothing. A person mistyping a few times is never slowed.
- The count holds across processes: the buckets live in records shared by every process of the
  server (``ofd.Records``, made before any fork), so a fork model's process per client, or
  prefork's workers, all see one count. The store and the clock are handed in (sans-IO).
- The table is bounded (``SETS`` x ``WAYS`` buckets, ~128 KiB): a source evicts the bucket that
  has refilled the most, so the sources being throttled are the last forgotten.
- Becoming throttled is logged, at most once a minute per source.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Callable
from typing import Protocol

from sockkit.services.getfile.root import Refused

#: Wrong tokens a source may send at once before it is slowed down.
BURST = 10
#: Seconds for a throttled source to earn one more try.
REFILL = 1.0
#: Seconds between two log lines about the same source.
LOG_EVERY = 60.0
SETS = 1024
WAYS = 4
#: One bucket: source key, tries left, when they were counted, when the source was last logged.
_BUCKET = struct.Struct("<Qddd")
RECORD_SIZE = _BUCKET.size * WAYS


class Store(Protocol):
    """``ofd.Records`` (every process) or ``ofd.LocalRecords`` (this one)."""

    count: int

    def locked(self, index: int): ...


class Throttled(Refused):
    """A token refused unchecked: its source has used up its tries for now."""


def source_of(host: str) -> str:
    """What is counted for a client address: the address, or its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _key(source: str) -> int:
    return int.from_bytes(hashlib.blake2b(source.encode(), digest_size=8).digest(), "little") or 1


class Throttle:
    """Per-source buckets of tries at the token, in a ``Store`` of ``SETS`` records."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def wait(self, host: str) -> float:
        """Seconds before ``host`` may try a token again (0: now)."""
        tries = self._update(host, spend=False)[0]
        return 0.0 if tries >= 1 else (1 - tries) * REFILL

    def failed(self, host: str) -> bool:
        """Count a wrong token from ``host``; True when it has just run out of tries and has not
        been logged in the last ``LOG_EVERY`` seconds (the caller logs it)."""
        return self._update(host, spend=True)[1]

    def _update(self, host: str, *, spend: bool) -> tuple[float, bool]:
        key = _key(source_of(host))
        now = self.clock()
        with self.store.locked(key % self.store.count) as record:
            ways = [_BUCKET.unpack_from(record, way * _BUCKET.size) for way in range(WAYS)]
            way = next((i for i, bucket in enumerate(ways) if bucket[0] == key), None)
            if way is None:  # new here: take the bucket that has refilled the most (or an empty one)
                way = max(range(WAYS), key=lambda i: _refilled(ways[i], now))
                ways[way] = (key, float(BURST), now, 0.0)
            _, tries, stamp, logged = ways[way]
            tries = min(float(BURST), tries + max(0.0, now - stamp) / REFILL)
            log = False
            if spend:
                tries = max(0.0, tries - 1)
                if tries < 1 and now - logged >= LOG_EVERY:
                    log, logged = True, now
            _BUCKET.pack_into(record, way * _BUCKET.size, key, tries, now, logged)
        return tries, log


def _refilled(bucket: tuple[int, float, float, float], now: float) -> float:
    key, tries, stamp, _ = bucket
    return float("inf") if key == 0 else tries + max(0.0, now - stamp) / REFILL
