"""Validators and conditional requests (RFC 9110 sections 8.8 and 13), pure.

Rules:
- The ETag names a file version as ``fstat`` sees it (inode, size, mtime in ns), the way nginx's
  does, so computing it never reads the file. It is strong, except for a file changed in the
  last ``RACY_SECONDS`` (the digest cache's "racily clean" rule): a second write within the same
  timestamp tick would keep every stamp, so such a file gets a weak tag, which ``If-Range`` never
  matches -- a resumed download of a file still being written starts over instead of splicing.
- Preconditions are evaluated in RFC 9110 section 13.2.2's order; a date that does not parse is
  ignored, as the RFC says.
"""

from __future__ import annotations

import email.utils
import functools
import os
import re
from typing import NamedTuple

from sockkit.services.getfile.digest import RACY_SECONDS

_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|\Z)')


class Validators(NamedTuple):
    etag: str  # with its quotes, and ``W/`` when weak
    modified: int  # Last-Modified, whole seconds since the epoch

    @property
    def weak(self) -> bool:
        return self.etag.startswith("W/")


def validators_for(info: os.stat_result, now: float | None) -> Validators:
    """The ETag and Last-Modified of the file version ``info`` describes, seen at ``now`` (None: no clock)."""
    tag = f'"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"'
    racy = now is not None and now - info.st_ctime_ns / 1e9 < RACY_SECONDS
    modified = int(info.st_mtime)
    if now is not None:
        modified = min(modified, int(now))  # never later than the Date we send (RFC 9110 8.8.2.1)
    return Validators("W/" + tag if racy else tag, modified)


@functools.lru_cache(maxsize=4096)  # the same few mtimes and the current second, again and again
def http_date(seconds: float) -> str:
    """IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return email.utils.formatdate(seconds, usegmt=True)


def parse_http_date(text: str) -> int | None:
    """Seconds since the epoch of an HTTP date in any of RFC 9110's three formats; None if invalid."""
    try:
        parsed = email.utils.parsedate_tz(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed[9] not in (0, None):
        return None  # HTTP dates are always GMT
    try:
        return int(email.utils.mktime_tz(parsed))
    except (OverflowError, ValueError):
        return None


def entity_tags(text: str) -> list[str] | None:
    """The entity-tags of an If-Match/If-None-Match list (``W/`` kept); None for bad syntax."""
    tags: list[str] = []
    position = 0
    while position < len(text):
        match = _TAG.match(text, position)
        if match is None:
            return None
        tags.append((match.group(1) or "") + match.group(2))
        position = match.end()
    return tags


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/")


def _matches(header: str, current: Validators, strong: bool) -> bool:
    """Does the list in ``header`` (or ``*``) match the current ETag, compared strongly or weakly?"""
    if header.strip() == "*":
        return True
    tags = entity_tags(header)
    if not tags:
        return False
    if strong:
        return not current.weak and any(tag == current.etag for tag in tags)
    return any(_opaque(tag) == _opaque(current.etag) for tag in tags)


def precondition(method: str, headers: dict[str, str], current: Validators | None) -> int | None:
    """412 or 304 when a precondition decides the answer, else None (RFC 9110 13.2.2).

    ``current`` is None when there is no current representation (a PUT to a new name).
    """
    if_match = headers.get("if-match")
    if if_match is not None:
        if current is None or not _matches(if_match, current, strong=True):
            return 412
    elif current is not None:
        since = parse_http_date(headers.get("if-unmodified-since", ""))
        if since is not None and current.modified > since:
            return 412
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if current is not None and _matches(if_none_match, current, strong=False):
            return 304 if method in ("GET", "HEAD") else 412
    elif method in ("GET", "HEAD") and current is not None:
        since = parse_http_date(headers.get("if-modified-since", ""))
        if since is not None and current.modified <= since:
            return 304
    return None


def range_applies(headers: dict[str, str], current: Validators) -> bool:
    """False when ``If-Range`` names another version: the Range is then ignored (RFC 9110 13.1.5).

    An entity-tag must match strongly; a date must equal Last-Modified exactly, and only a strong
    Last-Modified counts, so a racy file's date never matches.
    """
    value = headers.get("if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', 'W/"')):
        return not current.weak and value == current.etag
    return not current.weak and parse_http_date(value) == current.modified
