"""What every HTTP connection of one server shares: the clock, the Date line, the Repr-Digest cache.

Repr-Digest (RFC 9530) carries ``sha-256``: the RFC's registry of algorithms lists sha-256 and
sha-512 as the active ones, and getfile's own xxh3-128 is not registered, so a standard recipient
could only ignore it. sha-256 costs ~1 GB/s here (xxh3: ~10 GB/s), so it is computed in line only
for files up to ``REPR_DIGEST_INLINE`` bytes (~8 ms), or for any size when the client asks for it
with ``Want-Repr-Digest: sha-256=N`` (N > 0); once computed it is cached per file version under the
same rules as getfile's digests, and sent whenever known -- on 200, 206, 304 and HEAD alike, since
it describes the whole file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

from sockkit.services.actions import Clock
from sockkit.services.getfile.digest import DigestCache, feed_descriptor
from sockkit.services.getfile.http.conditional import http_date

#: Files up to this size get a Repr-Digest on their first request (sha-256 at ~1 GB/s: ~8 ms).
REPR_DIGEST_INLINE = 8 << 20
_WANTS_SHA256 = re.compile(r"(?:^|,)\s*sha-256\s*=\s*(?:[1-9]|10)\s*(?:,|$)")


def sha256_field(fd: int, size: int) -> str:
    """The Repr-Digest value: ``sha-256=:BASE64:`` of the first ``size`` bytes of ``fd``."""
    digest = feed_descriptor(fd, size, hashlib.sha256()).digest()
    return f"sha-256=:{base64.b64encode(digest).decode('ascii')}:"


def wants_sha256(header: str | None) -> bool:
    return bool(header) and _WANTS_SHA256.search(header.lower()) is not None


class HttpSite:
    """Shared by the HTTP connections of one server (and, under prefork, of one worker)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock
        self.repr_digests = DigestCache(clock=clock, compute=sha256_field)
        self._date_second = -1
        self._date = ""

    def now(self) -> float | None:
        return self.clock() if self.clock is not None else None

    def date(self, now: float) -> str:
        """The Date header for ``now``, formatted once per second."""
        second = int(now)
        if second != self._date_second:
            self._date, self._date_second = http_date(second), second
        return self._date

    def repr_digest(self, fd: int, info: os.stat_result, asked: str | None) -> str | None:
        """The Repr-Digest of this file version when known or cheap (see the module's rule)."""
        known = self.repr_digests.known(info)
        if known is not None:
            return known
        if info.st_size <= REPR_DIGEST_INLINE or wants_sha256(asked):
            return self.repr_digests.digest(fd, info)
        return None
