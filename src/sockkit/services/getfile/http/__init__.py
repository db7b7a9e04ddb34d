"""HTTP/1.1 on the getfile port: the same files, the same jail, for browsers, curl and wget.

A sans-IO service like every other (bytes in, actions out), built on h11: no HTTP parsing is
written here. The getfile connection hands a client over on its first request line when that line
ends in `` HTTP/1.x`` (``looks_like_http``); everything after that is this package's.
"""

from __future__ import annotations

import re

#: An HTTP/1.x request line (RFC 9112 section 3: method SP request-target SP HTTP-version). getfile's
#: requests (``GET1 ...``) and the chapter's bare paths never end this way, so the first line tells
#: the protocols apart; a file literally named ``x HTTP/1.1`` is the price (it is still served over HTTP).
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ \r\n]+ HTTP/1\.[0-9]\r?\n\Z")


#: The start of an HTTP request whose line is too long to see its end: a method, then a path or URL.
_REQUEST_START = re.compile(rb"[A-Z]{3,10} (?:/|https?://)")


def looks_like_http(line: bytes | bytearray) -> bool:
    """True when ``line`` (a first request line, newline included) is an HTTP/1.x request line."""
    return _REQUEST_LINE.match(line) is not None


def starts_like_http(prefix: bytes | bytearray) -> bool:
    """For a first line too long to end (past getfile's line limit): does it begin like HTTP's?
    Then HTTP answers it (414/431) rather than getfile's silent close for the chapter's client."""
    return _REQUEST_START.match(prefix) is not None
