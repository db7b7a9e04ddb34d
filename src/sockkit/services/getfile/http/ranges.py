"""Byte ranges (RFC 9110 section 14): what a ``Range`` header asks of a representation of ``size`` bytes.

Rules:
- A header this server does not understand (another unit, bad syntax, a first-pos after its
  last-pos) is ignored: the answer is the whole representation with 200, as RFC 9110 allows.
- A range set none of whose ranges is satisfiable is 416 (``Content-Range: bytes */SIZE``).
- Satisfiable ranges are clipped to the representation, sorted and coalesced where they overlap
  or touch (RFC 9110 section 14.1.1 lets a server do so), which also defeats the "many overlapping
  ranges" amplification. More than ``MAX_PARTS`` ranges left after that: answered whole (200).
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: Most parts of a multipart/byteranges answer; a request for more gets the whole file.
MAX_PARTS = 8
#: Most ranges read from one header (a longer list is refused before it is even sorted).
MAX_SPECS = 100
#: Longest number accepted in a range (20 digits hold any 64-bit offset).
_NUMBER = r"[0-9]{1,20}"
_SPEC = re.compile(rf"\s*(?:({_NUMBER})-({_NUMBER})?|-({_NUMBER}))\s*\Z")


class Span(NamedTuple):
    """Bytes ``start`` to ``end`` inclusive, as Content-Range writes them."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(NamedTuple):
    """Every range lies past the end: answer 416."""


UNSATISFIABLE = Unsatisfiable()


def ranges_for(header: str, size: int) -> list[Span] | Unsatisfiable | None:
    """The spans ``header`` selects from ``size`` bytes: a list, UNSATISFIABLE, or None (send it whole)."""
    unit, equals, spec_list = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs = spec_list.split(",")
    if len(specs) > MAX_SPECS:
        return None
    spans: list[Span] = []
    for spec in specs:
        if not spec.strip():
            continue  # RFC 9110's list syntax allows empty elements
        match = _SPEC.match(spec)
        if match is None:
            return None
        first, last, suffix = match.groups()
        if suffix is not None:
            length = int(suffix)
            if length > 0 and size > 0:
                spans.append(Span(max(0, size - length), size - 1))
            continue
        start = int(first)
        end = size - 1 if last is None else int(last)
        if last is not None and end < start:
            return None  # invalid, not merely unsatisfiable: ignore the header
        if start < size:
            spans.append(Span(start, min(end, size - 1)))
    if not spans:
        return UNSATISFIABLE
    merged = coalesce(spans)
    return merged if len(merged) <= MAX_PARTS else None


def coalesce(spans: list[Span]) -> list[Span]:
    """``spans`` sorted, with overlapping or adjacent ones joined."""
    merged: list[Span] = []
    for span in sorted(spans):
        if merged and span.start <= merged[-1].end + 1:
            if span.end > merged[-1].end:
                merged[-1] = Span(merged[-1].start, span.end)
        else:
            merged.append(span)
    return merged


def content_range(span: Span, size: int) -> str:
    return f"bytes {span.start}-{span.end}/{size}"
