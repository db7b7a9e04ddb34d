"""The getfile service: what every connection of one server shares.

Settings (root, upload, token), the digest cache and the transfer slots live here; each client
gets a GetfileConnection. Sans-IO like every service: the filesystem is used, sockets never.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from sockkit.protocols.getfile import ErrorCode, format_error
from sockkit.services.actions import Clock, Peer
from sockkit.services.getfile.connection import GetfileConnection
from sockkit.services.getfile.digest import DigestCache
from sockkit.services.getfile.http.site import HttpSite
from sockkit.services.getfile.root import ServedRoot
from sockkit.services.getfile.slots import Slots, make_slots

#: Concurrent transfers per server by default: far above what one disk serves well at once, far
#: below the default connection limit, so a crowd of downloads is told "busy" before it can
#: exhaust descriptors or memory.
DEFAULT_MAX_TRANSFERS = 64


class GetfileService:
    name = "getfile"

    def __init__(self, root: ServedRoot, *, allow_upload: bool = False, token: str | None = None,
                 slots: Slots | None = None, digests: DigestCache | None = None,
                 log: Callable[[str], None] | None = None, clock: Clock | None = None,
                 max_upload: int | None = None) -> None:
        self.root = root
        self.allow_upload = allow_upload
        #: Largest upload taken (``--max-upload``), by PUT1 and HTTP alike; None: the disk's free space.
        self.max_upload = max_upload
        self.token = token or None
        self.slots = slots if slots is not None else make_slots(DEFAULT_MAX_TRANSFERS)
        self.digests = digests if digests is not None else DigestCache()
        #: Called with one line per refused request (why); the caller adds time and escaping.
        self.log = log
        #: What HTTP clients on this port share (services/getfile/http); the clock dates its answers.
        self.http = HttpSite(clock)

    def connect(self, peer: Peer) -> GetfileConnection:
        return GetfileConnection(self, peer)

    def busy_reply(self) -> bytes:
        return format_error(ErrorCode.BUSY, "server busy (too many connections); try again later")

    def check_token(self, offered: str) -> bool:
        """Constant-time comparison, so response timing does not leak the token a byte at a time."""
        if self.token is None:
            return True
        return hmac.compare_digest(offered.encode("utf-8"), self.token.encode("utf-8"))
