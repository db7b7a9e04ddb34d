"""Content-Type from a file's name, and which types may run script in a browser.

Rule: the answer depends on the name only, never on the machine: Python's built-in table, not
``/etc/mime.types`` (so tests and users see the same type everywhere). Text is labelled UTF-8.
A type a browser would run script in (HTML, SVG, XML) is sent with a CSP sandbox (see
``ACTIVE_TYPES``), so a file someone put in the root cannot act as this server's own pages do.
"""

from __future__ import annotations

import functools
import mimetypes

_TYPES = mimetypes.MimeTypes(filenames=())  # the built-in table only
_EXTRA = {".md": "text/markdown", ".log": "text/plain", ".toml": "text/plain", ".yaml": "text/plain",
          ".yml": "text/plain", ".rs": "text/plain", ".go": "text/plain", ".ts": "text/plain",
          ".mjs": "text/javascript", ".wasm": "application/wasm", ".webp": "image/webp", ".avif": "image/avif",
          ".opus": "audio/ogg", ".mkv": "video/x-matroska", ".webm": "video/webm", ".flac": "audio/flac",
          ".zst": "application/zstd", ".7z": "application/x-7z-compressed", ".iso": "application/x-iso9660-image"}
#: Types a browser renders as a document that can run script.
ACTIVE_TYPES = frozenset({"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml",
                          "text/xsl", "application/xslt+xml"})
DEFAULT_TYPE = "application/octet-stream"
#: A compressed file is sent as what it is, never with Content-Encoding (a browser would unpack it).
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz",
               "br": "application/x-brotli", "compress": "application/x-compress"}


def media_type(name: str) -> str:
    """The bare media type for a file name (``application/octet-stream`` when unknown)."""
    dot = name.rfind(".")
    if dot > 0:
        extra = _EXTRA.get(name[dot:].lower())
        if extra is not None:
            return extra
    guessed, encoding = _TYPES.guess_type(name, strict=False)
    if encoding is not None:
        return _COMPRESSED.get(encoding, DEFAULT_TYPE)  # report.txt.gz is a gzip file, not text
    return guessed or DEFAULT_TYPE


@functools.lru_cache(maxsize=1024)
def content_type(name: str) -> str:
    """The Content-Type header value for a file name (text labelled UTF-8)."""
    kind = media_type(name)
    if kind.startswith("text/") or kind in ("application/json", "application/javascript", "image/svg+xml"):
        return kind + "; charset=utf-8"
    return kind
