"""LIST1 and TREE1 answers: what a directory under the root holds.

Rules: only regular files and directories are shown (symlinks as what they resolve to, and only
when that stays inside the root); names that are not valid UTF-8 are left out, since no request
could name them, and so are the names reserved for uploads in progress (root.is_reserved); a
listing is bounded in entries, bytes and depth, and a directory past a bound is refused rather
than silently cut short (a client must never believe a partial tree complete).
TREE1 does not descend into symlinked directories, so a link cycle cannot make it loop.
"""

from __future__ import annotations

import errno
import os
import stat

from sockkit.protocols.getfile import (
    MAX_LISTING_BYTES,
    MAX_LISTING_ENTRIES,
    Entry,
    ErrorCode,
    format_count,
    format_entry,
)
from sockkit.services.getfile.root import Refused, Walk, is_reserved

#: Most entries in one answer: a tree this large is better fetched a subdirectory at a time.
MAX_ENTRIES = MAX_LISTING_ENTRIES
#: Most bytes in one answer, for the same reason (the client refuses more, too).
MAX_BYTES = MAX_LISTING_BYTES
#: Errors that mean "the server is short of resources", never "this entry is gone".
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
#: Deepest directory TREE1 descends into (each level holds one descriptor while it is walked).
MAX_DEPTH = 64


def _shown(name: str) -> bool:
    """Whether a listing may show ``name``: valid UTF-8 and not an upload's."""
    if is_reserved(name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes: not UTF-8 on disk
        return False
    return True


class _Answer:
    """Entry lines gathered under the bounds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.lines: list[bytes] = []
        self.entries: list[Entry] = []
        self.size = 0

    def add(self, entry: Entry) -> None:
        line = format_entry(entry)
        self.lines.append(line)
        self.entries.append(entry)
        self.size += len(line)
        if len(self.lines) > MAX_ENTRIES or self.size > MAX_BYTES:
            raise Refused(ErrorCode.NOT_PERMITTED,
                          f"{self.what} holds more than {MAX_ENTRIES} entries or {MAX_BYTES >> 20} MiB of "
                          "listing; list its subdirectories one at a time")

    def encode(self) -> bytes:
        return format_count(len(self.lines)) + b"".join(self.lines)


def _kind_of(walk: Walk, entry: os.DirEntry) -> tuple[str, os.stat_result] | None:
    info = entry.stat(follow_symlinks=False)
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        target = walk.target_of(entry.name)
        if target is None:
            return None
        info, mode = target, target.st_mode
    if stat.S_ISREG(mode):
        return "f", info
    if stat.S_ISDIR(mode):
        return "d", info
    return None


def _entries(walk: Walk) -> list[os.DirEntry]:
    with os.scandir(walk.here) as found:
        return sorted((e for e in found if _shown(e.name)), key=lambda e: e.name)


def list_directory(walk: Walk, what: str) -> bytes:
    """``OK1 COUNT`` and one line per entry of the directory the walk stands in."""
    return _gather_directory(walk, what).encode()


def directory_entries(walk: Walk, what: str) -> list[Entry]:
    """The entries LIST1 would show, under the same rules and bounds (for the HTTP listing page)."""
    return _gather_directory(walk, what).entries


def _gather_directory(walk: Walk, what: str) -> _Answer:
    answer = _Answer(what)
    for entry in _entries(walk):
        try:
            found = _kind_of(walk, entry)
        except OSError as exc:
            if exc.errno in EXHAUSTED:
                raise
            continue  # removed while we listed it
        if found is not None:
            kind, info = found
            answer.add(Entry(kind, info.st_size if kind == "f" else 0, info.st_mtime_ns, entry.name))
    return answer


def list_tree(walk: Walk, what: str) -> bytes:
    """``OK1 COUNT`` and one line per regular file below the directory the walk stands in."""
    return _gather_tree(walk, what).encode()


def tree_entries(walk: Walk, what: str) -> list[Entry]:
    """The files TREE1 would show, under the same rules and bounds (for the HTTP folder archive)."""
    return _gather_tree(walk, what).entries


def _gather_tree(walk: Walk, what: str) -> _Answer:
    answer = _Answer(what)
    _walk_tree(walk, "", answer, 0)
    return answer


def _walk_tree(walk: Walk, prefix: str, answer: _Answer, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Refused(ErrorCode.NOT_PERMITTED, f"{answer.what} is nested deeper than {MAX_DEPTH} levels")
    for entry in _entries(walk):
        try:
            is_real_dir = entry.is_dir(follow_symlinks=False)
            found = None if is_real_dir else _kind_of(walk, entry)
        except OSError as exc:
            if exc.errno in EXHAUSTED:
                raise
            continue
        if is_real_dir:
            try:
                walk.enter(entry.name)
            except OSError as exc:
                if exc.errno in EXHAUSTED:
                    raise  # out of descriptors: refuse the whole tree rather than omit a branch
                continue  # gone, unreadable, or swapped for a symlink since scandir saw it
            try:
                _walk_tree(walk, f"{prefix}{entry.name}/", answer, depth + 1)
            finally:
                walk.leave()
        elif found is not None and found[0] == "f":
            info = found[1]
            answer.add(Entry("f", info.st_size, info.st_mtime_ns, prefix + entry.name))
