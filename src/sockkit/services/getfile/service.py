"""The getfile service: what every connection of one server shares.

Settings (root, upload, token), the digest cache and the transfer slots live here; each client
gets a GetfileConnection. Sans-IO like every service: the filesystem is used, sockets never.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable

from sockkit.protocols.getfile import ErrorCode, Put, format_error
from sockkit.services.actions import Clock, Peer
from sockkit.services.getfile.connection import GetfileConnection
from sockkit.services.getfile.digest import DigestCache
from sockkit.services.getfile.http.site import HttpSite
from sockkit.services.getfile.root import Refused, ServedRoot
from sockkit.services.getfile.slots import Slots, make_slots
from sockkit.services.getfile.stalls import Stalls
from sockkit.services.getfile.throttle import BURST, REFILL, Throttle, Throttled, source_of
from sockkit.services.getfile.upload import Upload

#: Concurrent transfers per server by default: far above what one disk serves well at once, far
#: below the default connection limit, so a crowd of downloads is told "busy" before it can
#: exhaust descriptors or memory.
DEFAULT_MAX_TRANSFERS = 64


class GetfileService:
    name = "getfile"

    def __init__(self, root: ServedRoot, *, allow_upload: bool = False, token: str | None = None,
                 slots: Slots | None = None, digests: DigestCache | None = None,
                 log: Callable[[str], None] | None = None, clock: Clock | None = None,
                 max_upload: int | None = None, throttle: Throttle | None = None,
                 stalls: Stalls | None = None) -> None:
        self.root = root
        self.allow_upload = allow_upload
        #: Largest upload taken (``--max-upload``), by PUT1 and HTTP alike; None: the disk's free space.
        self.max_upload = max_upload
        self.token = token or None
        self.slots = slots if slots is not None else make_slots(DEFAULT_MAX_TRANSFERS)
        self.digests = digests if digests is not None else DigestCache()
        #: Called with one line per refused request (why); the caller adds time and escaping.
        self.log = log
        #: Wrong tokens counted per source address (None: not counted, as in tests that need no clock).
        self.throttle = throttle
        #: Uploads in progress in every process, so stalled ones give their disk back (None: not listed).
        self.stalls = stalls
        #: What HTTP clients on this port share (services/getfile/http); the clock dates its answers.
        self.http = HttpSite(clock)

    def begin_upload(self, request: Put) -> Upload:
        """The Upload for ``request`` under this server's rules (root, ``--max-upload``, stalled
        uploads giving way); raises Refused. Every way in that stores a file (PUT1, HTTP) uses this."""
        return Upload(self.root, request, self.max_upload, self.stalls)

    def connect(self, peer: Peer) -> GetfileConnection:
        return GetfileConnection(self, peer)

    def busy_reply(self) -> bytes:
        return format_error(ErrorCode.BUSY, "server busy (too many connections); try again later")

    def check_token(self, offered: str, host: str) -> Refused | None:
        """None when ``offered`` is the token (or none is needed); else why not: ``Throttled`` when
        ``host`` (the Peer's address) has run out of tries -- its token is then not compared -- or
        a plain ``Refused`` for a wrong token, which costs ``host`` a try (throttle.py). Every way
        in that takes a token (getfile's AUTH1, HTTP's Authorization) asks here.

        The comparison is constant-time, so response timing does not leak the token a byte at a time."""
        if self.token is None:
            return None
        throttle = self.throttle
        if throttle is not None and (wait := throttle.wait(host)) > 0:
            return Throttled(ErrorCode.AUTH_REQUIRED, f"too many wrong tokens from {source_of(host)}; try again in "
                                                      f"{math.ceil(wait)} s")
        if hmac.compare_digest(offered.encode("utf-8"), self.token.encode("utf-8")):
            return None
        if throttle is not None and throttle.failed(host) and self.log is not None:
            self.log(f"getfile {host}: too many wrong tokens from {source_of(host)}: its tokens are refused "
                     f"unchecked but for one try every {REFILL:g} s (after {BURST} at once; this line at most once "
                     "a minute per source)")
        return Refused(ErrorCode.AUTH_REQUIRED, "wrong token")
