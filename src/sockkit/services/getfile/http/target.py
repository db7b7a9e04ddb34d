"""The request target (RFC 9112 section 3.2) as a path under the root and a query, pure.

Rules: the path is percent-decoded exactly once, must then be valid UTF-8 (an over-long encoding
such as ``%c0%ae`` is invalid UTF-8, so refused) and hold no NUL; ``%2f`` becomes a separator and
``..`` then meets the root's own refusal, like every other path. The absolute form
(``GET http://host/x``) is accepted as RFC 9112 requires, and only its path is used; the
authority and asterisk forms are refused. Nothing here decides what is inside the root: that is
``ServedRoot``'s job, walked from its directory descriptor.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from sockkit.protocols.getfile import MAX_PATH


class BadTarget(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_target(target: bytes) -> tuple[str, dict[str, str]]:
    """(decoded path beginning with ``/``, query parameters) of a request target."""
    if (b"%" not in target and b"?" not in target and target.startswith(b"/") and target.isascii()
            and len(target) <= MAX_PATH and b"\x00" not in target):
        return target.decode("ascii"), {}  # the common case: nothing to decode
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise BadTarget(400, "the request target must be ASCII (percent-encode other bytes)") from None
    if not text.startswith("/"):
        try:
            parts = urlsplit(text)
        except ValueError:
            raise BadTarget(400, "malformed request target") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise BadTarget(400, "the request target must be a path (or an absolute http URL)")
        text = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    raw_path, _, raw_query = text.partition("?")
    raw = unquote_to_bytes(raw_path)
    if b"\x00" in raw:
        raise BadTarget(400, "NUL byte in path")
    if len(raw) > MAX_PATH:
        raise BadTarget(414, f"path longer than {MAX_PATH} bytes")
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget(400, "the path is not valid UTF-8") from None
    try:
        query = dict(parse_qsl(raw_query, keep_blank_values=True, strict_parsing=False, max_num_fields=32))
    except ValueError:
        raise BadTarget(400, "too many query parameters") from None
    return path, query
