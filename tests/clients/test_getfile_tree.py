"""``download_tree`` (``sockkit get -r``): nested trees over one pipelined connection, and hostile listings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sockkit.clients import getfile_tree
from sockkit.errors import ProtocolViolation, TransferInterrupted
from tests.clients.fake_getfile_server import FakeServer, Faults

FILES = {
    "docs/a.txt": b"a" * 10,
    "docs/sub dir/b ü.bin": os.urandom(70_000),
    "docs/sub dir/deeper/c": b"",
    "docs/sub dir/deeper/d.bin": os.urandom(2_000_000),
    "elsewhere/x": b"x",
}


def tree_of(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_nested_tree_arrives_exactly(tmp_path):
    """Every file, byte for byte, in DEST/<base name>; nothing else; one connection."""
    with FakeServer(FILES) as fake:
        result = getfile_tree.download_tree("docs", port=fake.port, dest=tmp_path)
        assert len(fake.threads) == 1
    assert result.root == tmp_path / "docs" and not result.failed
    for path, data in FILES.items():
        if path.startswith("docs/"):
            assert (tmp_path / path).read_bytes() == data
    assert tree_of(tmp_path) == {"docs", "docs/a.txt", "docs/sub dir", "docs/sub dir/b ü.bin",
                                 "docs/sub dir/deeper", "docs/sub dir/deeper/c", "docs/sub dir/deeper/d.bin"}


def test_second_run_skips_up_to_date_files(tmp_path):
    with FakeServer(FILES) as fake:
        getfile_tree.download_tree("docs", port=fake.port, dest=tmp_path)
        again = getfile_tree.download_tree("docs", port=fake.port, dest=tmp_path)
    assert len(again.skipped) == 4 and not again.files and not again.failed


def test_root_of_server_into_dest_itself(tmp_path):
    with FakeServer({"a": b"1", "b/c": b"2"}) as fake:
        getfile_tree.download_tree(".", port=fake.port, dest=tmp_path / "new")
    assert tree_of(tmp_path / "new") == {"a", "b", "b/c"}


def test_many_small_files_are_pipelined_on_one_connection(tmp_path):
    files = {f"many/{i:04d}.txt": os.urandom(4096) for i in range(600)}
    with FakeServer(files) as fake:
        result = getfile_tree.download_tree("many", port=fake.port, dest=tmp_path)
        assert len(fake.threads) == 1 and len(fake.requests) == 601
    assert len(result.files) == 600
    assert all((tmp_path / path).read_bytes() == data for path, data in files.items())


@pytest.mark.parametrize("line", ["f 1 0 ../evil", "f 1 0 /tmp/evil", "f 1 0 a/../../evil", "f 1 0 a//b",
                                  "f 1 0 ./x", "f 1 0 %2e%2e/evil", "f 1 0 ..", "f 1 0 a/%2E%2E/%2E%2E/evil",
                                  "d 0 0 ../evildir"])
def test_hostile_listing_fetches_nothing(tmp_path, line):
    """One path that could leave the destination and nothing at all is fetched or created."""
    dest = tmp_path / "dest"
    with FakeServer({"ok": b"fine"}, faults=Faults(tree=["f 4 0 ok", line])) as fake:
        with pytest.raises(ProtocolViolation, match="unsafe path"):
            getfile_tree.download_tree("t", port=fake.port, dest=dest)
        assert not any(r.startswith(b"GET1") for r in fake.requests)
    assert tree_of(tmp_path) == {"dest", "dest/t"}


def test_duplicate_paths_are_refused(tmp_path):
    with FakeServer({"t/ok": b"fine"}, faults=Faults(tree=["f 4 0 ok", "f 4 0 ok"])) as fake, \
            pytest.raises(ProtocolViolation, match="twice"):
        getfile_tree.download_tree("t", port=fake.port, dest=tmp_path)


def test_local_symlink_in_the_tree_is_not_followed(tmp_path):
    """A directory symlink planted in the local tree cannot carry a write outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "dest" / "docs"
    root.mkdir(parents=True)
    (root / "sub dir").symlink_to(outside)
    with FakeServer(FILES) as fake:
        result = getfile_tree.download_tree("docs", port=fake.port, dest=tmp_path / "dest")
    assert list(outside.iterdir()) == []
    assert {path for path, _ in result.failed} == {"sub dir/b ü.bin", "sub dir/deeper/c", "sub dir/deeper/d.bin"}
    assert (root / "a.txt").read_bytes() == b"a" * 10


def test_missing_file_fails_alone(tmp_path):
    with FakeServer({"t/a": b"1", "t/c": b"3"}, faults=Faults(tree=["f 1 0 a", "f 1 0 b", "f 1 0 c"])) as fake:
        result = getfile_tree.download_tree("t", port=fake.port, dest=tmp_path)
    assert [path for path, _ in result.failed] == ["b"]
    assert tree_of(tmp_path / "t") == {"a", "c"}


def test_existing_different_file_is_kept(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_bytes(b"mine")
    with FakeServer(FILES) as fake:
        result = getfile_tree.download_tree("docs", port=fake.port, dest=tmp_path)
    assert [path for path, _ in result.failed] == ["a.txt"]
    assert (tmp_path / "docs" / "a.txt").read_bytes() == b"mine"


def test_interrupted_tree_resumes(tmp_path):
    with FakeServer(FILES) as fake:
        fake.faults.short_body = 5  # the first file, a.txt, gets 5 of its 10 bytes
        with pytest.raises(TransferInterrupted):
            getfile_tree.download_tree("docs", port=fake.port, dest=tmp_path)
        fake.faults = Faults()
        result = getfile_tree.download_tree("docs", port=fake.port, dest=tmp_path)
    assert sum(r.resumed_from for r in result.files) > 0
    for path, data in FILES.items():
        if path.startswith("docs/"):
            assert (tmp_path / path).read_bytes() == data
    assert not [p for p in tree_of(tmp_path) if p.endswith(".part")]


def _long_paths(count: int, length: int = 4000):
    """``count`` listing lines, each naming a distinct path of ``length`` bytes (generated lazily)."""
    for index in range(count):
        name = f"{index:08d}"
        yield f"f 1 0 {name}/{'p' * (length - len(name) - 1)}"


def test_listing_past_the_protocol_bound_is_refused_in_bounded_memory(tmp_path):
    """100,000 paths of 4,000 bytes (400 MB announced, within the entry count): refused once the
    entry lines pass 32 MiB, having held about that much (before: ~940 MiB, then a refusal)."""
    import tracemalloc

    faults = Faults(tree=_long_paths(100_000), tree_count=100_000)
    with FakeServer({}, faults=faults) as fake:
        tracemalloc.start()
        try:
            with pytest.raises(ProtocolViolation, match="longer than 32 MiB"):
                getfile_tree.download_tree("t", port=fake.port, dest=tmp_path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert not any(r.startswith(b"GET1") for r in fake.requests)
    assert peak < 80 << 20, f"peak {peak >> 20} MiB"


def test_absurd_count_is_refused_before_reading(tmp_path):
    with FakeServer({}, faults=Faults(tree=[], tree_count=10**9)) as fake, \
            pytest.raises(ProtocolViolation, match="announced 1000000000 entries"):
        getfile_tree.download_tree("t", port=fake.port, dest=tmp_path)


def test_absurdly_deep_path_is_refused_with_a_message(tmp_path):
    """A path 1,500 directories deep: a clear refusal, nothing created (before: RecursionError)."""
    deep = "a/" * 1500 + "x"
    with FakeServer({}, faults=Faults(tree=[f"f 1 0 {deep}"])) as fake, \
            pytest.raises(ProtocolViolation, match="1501 directories deep"):
        getfile_tree.download_tree("t", port=fake.port, dest=tmp_path / "dest")
    assert tree_of(tmp_path) == {"dest", "dest/t"}


def test_deep_but_honest_tree_arrives(tmp_path):
    """A file 120 directories down (within MAX_DEPTH, past DIR_CACHE) is fetched, and the walk
    down to it is a loop: it works under a recursion limit far below its depth."""
    import sys

    path = "/".join(f"d{i}" for i in range(119)) + "/f.txt"
    limit = sys.getrecursionlimit()
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    with FakeServer({f"t/{path}": b"deep\n"}) as fake:
        sys.setrecursionlimit(depth + 80)  # room for the download's own calls, not for 120 nested ones
        try:
            result = getfile_tree.download_tree("t", port=fake.port, dest=tmp_path)
        finally:
            sys.setrecursionlimit(limit)
    assert not result.failed and (tmp_path / "t" / path).read_bytes() == b"deep\n"


def test_trickled_listing_ends_at_the_timeout(tmp_path):
    """One entry every 0.5 s never lets a per-read timeout fire; the listing as a whole must
    still arrive within --timeout (here 2 s) or the client gives up with a message."""
    import time

    faults = Faults(tree=(f"f 1 0 n{i}" for i in range(1000)), tree_count=1000, tree_pause=0.5)
    with FakeServer({}, faults=faults) as fake:
        began = time.monotonic()
        with pytest.raises(TransferInterrupted, match="did not finish within 2 s"):
            getfile_tree.download_tree("t", port=fake.port, dest=tmp_path, timeout=2)
        took = time.monotonic() - began
    assert took < 6, f"gave up after {took:.1f} s"
