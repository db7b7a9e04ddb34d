"""Port numbers, checked before they reach the resolver: ``getaddrinfo`` wraps a number past 65535
(65537 is port 1, 99999 is 34463), so ``serve --port 65537`` used to listen on port 1 and a client
to connect there. Every command's port goes through here and is a usage error when out of range.

Kept free of imports so clients can check ports without paying for the server's modules.
"""

from __future__ import annotations

#: The largest TCP port.
MAX_PORT = 65535


def parse_port(text: str | int, *, listen: bool = False) -> int:
    """A port number: 1 to 65535 to connect to, also 0 to listen on (pick a free one); ValueError
    for anything else (out of range, a sign, not decimal digits)."""
    text = str(text).strip()
    lowest = 0 if listen else 1
    if not (text.isascii() and text.isdigit() and lowest <= int(text) <= MAX_PORT):
        raise ValueError(f"port {text[:20]!r} is out of range: a port is a number from {lowest} to {MAX_PORT}"
                         + (" (0 picks a free one)" if listen else ""))
    return int(text)


def listen_port(text: str) -> int:
    """``parse_port`` as an argparse type for a port to listen on (0-65535): a usage error, exit 2."""
    return _for_argparse(text, listen=True)


def connect_port(text: str) -> int:
    """``parse_port`` as an argparse type for a port to connect to (1-65535): a usage error, exit 2."""
    return _for_argparse(text, listen=False)


def _for_argparse(text: str, *, listen: bool) -> int:
    import argparse

    try:
        return parse_port(text, listen=listen)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
