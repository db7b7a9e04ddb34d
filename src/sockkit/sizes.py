"""Sizes on the command line: one parser for every option that takes bytes.

Rule: ``100``, ``512k``, ``64M``, ``64MiB``, ``1.5g`` all mean what a reader expects (binary
multiples, 1k = 1024, as curl and wget count), and no number, however long, reaches a float or an
overflow: the arithmetic is done in Decimal and anything past 1 TiB is refused as a typo.
"""

from __future__ import annotations

import argparse
import re
from decimal import Decimal

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_MULTIPLIERS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
#: Largest size a flag takes (1 TiB). Past it a number is a typo.
MAX_SIZE = 1 << 40


def shown(text: str) -> str:
    """``text`` for an error message, cut short if someone pasted a novel."""
    return repr(text) if len(text) <= 24 else repr(text[:20] + "...")


def parse_size(text: str) -> int:
    """``100`` -> 100 bytes; ``512k``, ``1M``, ``1MiB``, ``2g`` (binary multiples, 1k = 1024); at most 1 TiB.
    An ``argparse`` type: a bad size is the option's usage error."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a size: try 100, 512k or 1M")
    size = Decimal(match.group(1)) * _MULTIPLIERS[match.group(2).lower()]
    if size > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"{shown(text)} is too large (at most 1 TiB)")
    return int(size)
