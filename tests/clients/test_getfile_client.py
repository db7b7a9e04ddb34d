"""The getfile client against a scripted server on loopback: exact bytes, resume, and every hostile answer.

Each hostile test checks the same three things: the right error, nothing under the final name
(an old file there intact), and nothing written outside the destination.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from pathlib import Path

import pytest

from sockkit.clients import getfile, getfile_legacy, getfile_upload, localfs
from sockkit.clients.localfs import part_name
from sockkit.clients.transfer import PIPELINE_MIN
from sockkit.errors import (
    Cancelled,
    ConnectError,
    DestinationError,
    DestinationExists,
    IntegrityError,
    NotEnoughSpace,
    ProtocolViolation,
    RemoteError,
    TransferInterrupted,
    describe,
)
from tests.clients.fake_getfile_server import FakeServer, Faults, digest_of

BLOB = os.urandom(3 * 1024 * 1024 + 17)
#: Above transfer.PIPELINE_MIN: received on one thread, written by another.
HUGE = os.urandom(PIPELINE_MIN + 5 * 1024 * 1024 + 3)


def tree_of(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def parts_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".part"))


@pytest.fixture
def server():
    files = {"big.bin": BLOB, "huge.bin": HUGE, "notes.txt": b"hello world\n", "sub/deep.txt": b"deep"}
    with FakeServer(files) as fake:
        yield fake


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 65536, 3 * 1024 * 1024 + 17])
def test_download_is_byte_identical(tmp_path, size):
    """Every size arrives exactly, under the request's base name, with no part file left."""
    data = os.urandom(size)
    with FakeServer({"dir/file.bin": data}) as fake:
        result = getfile.download("dir/file.bin", port=fake.port, dest=tmp_path)
    assert (tmp_path / "file.bin").read_bytes() == data
    assert result.size == size and result.digest == digest_of(data) and result.resumed_from == 0
    assert tree_of(tmp_path) == {"file.bin"}


@pytest.mark.parametrize("name", ["with space.txt", "ünïcødé — 名前.txt", "percent%41.txt", "new\nline.txt"])
def test_names_with_spaces_non_ascii_and_control_characters(tmp_path, name):
    with FakeServer({f"d/{name}": b"payload"}) as fake:
        getfile.download(f"d/{name}", port=fake.port, dest=tmp_path)
    assert (tmp_path / name).read_bytes() == b"payload"


def test_dest_may_name_the_file(tmp_path, server):
    result = getfile.download("notes.txt", port=server.port, dest=tmp_path / "renamed.txt")
    assert result.path == tmp_path / "renamed.txt"
    assert tree_of(tmp_path) == {"renamed.txt"}


def test_dest_in_missing_directory_is_refused(tmp_path, server):
    with pytest.raises(DestinationError, match="no such directory"):
        getfile.download("notes.txt", port=server.port, dest=tmp_path / "nope" / "x.txt")


def test_existing_different_file_is_not_replaced_without_force(tmp_path, server):
    (tmp_path / "notes.txt").write_bytes(b"mine")
    with pytest.raises(DestinationExists, match="--force"):
        getfile.download("notes.txt", port=server.port, dest=tmp_path)
    assert (tmp_path / "notes.txt").read_bytes() == b"mine"
    assert parts_in(tmp_path) == []
    getfile.download("notes.txt", port=server.port, dest=tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_bytes() == b"hello world\n"


@pytest.mark.parametrize("force", [True, False])
def test_a_directory_that_appears_at_the_final_name_is_never_replaced(tmp_path, force):
    """The last step of every download: even with --force a verified part never replaces a directory."""
    (tmp_path / "x.part").write_bytes(b"data")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "inside").write_bytes(b"keep")
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(DestinationError if force else DestinationExists, match="x: "):
            localfs.rename_into_place(dirfd, "x.part", "x", force=force)
    finally:
        os.close(dirfd)
    assert (tmp_path / "x" / "inside").read_bytes() == b"keep" and (tmp_path / "x.part").read_bytes() == b"data"


def test_existing_identical_file_is_up_to_date(tmp_path, server):
    (tmp_path / "notes.txt").write_bytes(b"hello world\n")
    result = getfile.download("notes.txt", port=server.port, dest=tmp_path)
    assert result.unchanged and result.size == 12


def test_existing_symlink_is_not_followed(tmp_path, server):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").symlink_to(outside)
    with pytest.raises(DestinationExists):
        getfile.download("notes.txt", port=server.port, dest=dest)
    getfile.download("notes.txt", port=server.port, dest=dest, force=True)
    assert outside.read_bytes() == b"keep"
    assert not (dest / "notes.txt").is_symlink()


@pytest.mark.parametrize(("name", "data"), [("big.bin", BLOB), ("huge.bin", HUGE)], ids=["one-thread", "writer-thread"])
def test_short_body_keeps_part_and_resume_completes_it(tmp_path, server, name, data):
    """Connection lost: TransferInterrupted, every byte that arrived is in the part; the next run
    resumes it byte-identically."""
    server.faults.short_body = 1000
    with pytest.raises(TransferInterrupted, match="closed the connection"):
        getfile.download(name, port=server.port, dest=tmp_path)
    assert not (tmp_path / name).exists()
    part = tmp_path / part_name(name, digest_of(data).split(":")[1])
    assert part.exists() and part.stat().st_size == len(data) - 1000
    server.faults = Faults()
    result = getfile.download(name, port=server.port, dest=tmp_path)
    assert result.resumed_from == len(data) - 1000
    assert server.requests[-1] == f"GET1 {len(data) - 1000} {digest_of(data)} {name}".encode()
    assert (tmp_path / name).read_bytes() == data
    assert parts_in(tmp_path) == []


def test_failure_leaves_old_file_intact(tmp_path, server):
    (tmp_path / "big.bin").write_bytes(b"old")
    server.faults.short_body = 10
    with pytest.raises(TransferInterrupted):
        getfile.download("big.bin", port=server.port, dest=tmp_path, force=True)
    assert (tmp_path / "big.bin").read_bytes() == b"old"


def test_file_changed_between_attempts_starts_over(tmp_path, server):
    """The server answers offset 0 to a stale part: the old bytes are discarded, never spliced."""
    server.faults.short_body = len(BLOB) // 2
    with pytest.raises(TransferInterrupted):
        getfile.download("big.bin", port=server.port, dest=tmp_path)
    new = os.urandom(len(BLOB))
    server.files["big.bin"] = new
    server.faults = Faults()
    result = getfile.download("big.bin", port=server.port, dest=tmp_path)
    assert result.resumed_from == 0
    assert (tmp_path / "big.bin").read_bytes() == new
    assert parts_in(tmp_path) == []


def test_server_resuming_another_version_is_refused(tmp_path, server):
    server.faults.short_body = 5000
    with pytest.raises(TransferInterrupted):
        getfile.download("big.bin", port=server.port, dest=tmp_path)
    server.files["big.bin"] = os.urandom(len(BLOB))
    server.faults = Faults(resume_anyway=True)
    with pytest.raises(ProtocolViolation, match="different version"):
        getfile.download("big.bin", port=server.port, dest=tmp_path)
    assert not (tmp_path / "big.bin").exists()


def test_overlong_body_is_a_protocol_error(tmp_path, server):
    server.faults.extra_bytes = b"EXTRA"
    with pytest.raises(ProtocolViolation, match="more than it announced"):
        getfile.download("notes.txt", port=server.port, dest=tmp_path)
    assert not (tmp_path / "notes.txt").exists()


def test_announced_size_smaller_than_sent_is_refused(tmp_path, server):
    server.faults.size_override = 5
    with pytest.raises((ProtocolViolation, IntegrityError)):
        getfile.download("notes.txt", port=server.port, dest=tmp_path)
    assert not (tmp_path / "notes.txt").exists()


def test_announced_size_larger_than_sent_times_out(tmp_path, server):
    server.faults.size_override = 100
    with pytest.raises(TransferInterrupted, match="sent nothing"):
        getfile.download("notes.txt", port=server.port, dest=tmp_path, timeout=0.5)
    assert not (tmp_path / "notes.txt").exists()


@pytest.mark.parametrize("fault", [Faults(flip_byte=123456), Faults(wrong_digest=True)])
def test_corrupt_data_is_refused_and_the_part_dropped(tmp_path, server, fault):
    server.faults = fault
    with pytest.raises(IntegrityError, match="does not match"):
        getfile.download("big.bin", port=server.port, dest=tmp_path)
    assert tree_of(tmp_path) == set()


def test_absurd_size_is_refused_before_writing(tmp_path, server):
    server.faults.size_override = 10**18
    with pytest.raises(NotEnoughSpace, match="not enough space"):
        getfile.download("notes.txt", port=server.port, dest=tmp_path)
    assert tree_of(tmp_path) == set()


def test_stall_mid_body_times_out_and_keeps_part(tmp_path, server):
    server.faults.stall_after = 4096
    with pytest.raises(TransferInterrupted, match=r"sent nothing for 0\.5 s"):
        getfile.download("big.bin", port=server.port, dest=tmp_path, timeout=0.5)
    assert [p for p in parts_in(tmp_path)] and not (tmp_path / "big.bin").exists()


def test_stall_before_answer_times_out(tmp_path, server):
    server.faults.stall_before_header = True
    with pytest.raises(TransferInterrupted, match="no answer"):
        getfile.download("big.bin", port=server.port, dest=tmp_path, timeout=0.5)
    assert tree_of(tmp_path) == set()


def test_garbage_answer_is_a_protocol_error(tmp_path):
    with FakeServer({}, legacy=True) as fake:  # answers a GET1 line with nothing: closes
        fake.files["GET1 0 - x"] = b"not a protocol answer\n"
        with pytest.raises(ProtocolViolation, match="does not speak getfile v1"):
            getfile.download("x", port=fake.port, dest=tmp_path)
    assert tree_of(tmp_path) == set()


@pytest.mark.parametrize("code", ["not-found", "is-directory", "not-permitted", "outside-root", "busy",
                                  "bad-request", "not-regular", "internal"])
def test_error_answers_become_remote_errors(tmp_path, server, code):
    server.faults.error = (code, "because \x1b[31mred")
    with pytest.raises(RemoteError) as caught:
        getfile.download("notes.txt", port=server.port, dest=tmp_path)
    assert caught.value.code == code
    assert "\x1b" not in describe(caught.value) and "\n" not in describe(caught.value)
    assert tree_of(tmp_path) == set()


def test_connection_refused_is_one_line(tmp_path):
    with FakeServer({}) as fake:
        port = fake.port
    with pytest.raises(ConnectError, match="connection refused"):
        getfile.download("x", port=port, dest=tmp_path)


def test_progress_reaches_total(tmp_path, server):
    seen: list[getfile.Progress] = []
    getfile.download("big.bin", port=server.port, dest=tmp_path, progress=seen.append)
    assert seen[-1].done == seen[-1].total == len(BLOB)
    assert all(a.done <= b.done for a, b in itertools.pairwise(seen))
    assert seen[-1].speed >= 0


@pytest.mark.parametrize(("name", "data", "sent"), [("big.bin", BLOB, 100_000), ("huge.bin", HUGE, 9_000_123)],
                         ids=["one-thread", "writer-thread"])
def test_cancel_leaves_a_part_that_resumes(tmp_path, server, name, data, sent):
    """Cancelled while the server is silent: every byte that came is in the part, and it resumes."""
    cancel = threading.Event()
    server.faults.stall_after = sent
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(Cancelled):
        getfile.download(name, port=server.port, dest=tmp_path, cancel=cancel, timeout=30)
    assert len(parts_in(tmp_path)) == 1 and not (tmp_path / name).exists()
    server.faults = Faults()
    result = getfile.download(name, port=server.port, dest=tmp_path)
    assert result.resumed_from == sent and (tmp_path / name).read_bytes() == data


def test_limit_rate_still_delivers_exact_bytes(tmp_path):
    data = os.urandom(200_000)
    with FakeServer({"f": data}) as fake:
        getfile.download("f", port=fake.port, dest=tmp_path, limit_rate=2_000_000)
    assert (tmp_path / "f").read_bytes() == data


def test_dev_null_is_streamed_and_verified(server):
    result = getfile.download("big.bin", port=server.port, dest="/dev/null")
    assert result.size == len(BLOB) and result.path == Path("/dev/null")


def test_fifo_destination_gets_every_byte_in_order(tmp_path, server):
    """A FIFO is written straight through (no part file, no writer thread: its writes may block
    on the reader); a reader on the other end gets the exact bytes of a large file."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received = bytearray()

    def read_all() -> None:
        with open(fifo, "rb") as reader:
            while chunk := reader.read(1 << 16):
                received.extend(chunk)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    result = getfile.download("huge.bin", port=server.port, dest=fifo, timeout=30)
    reader.join(30)
    assert not reader.is_alive()
    assert result.size == len(HUGE) and bytes(received) == HUGE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo"]


def test_token_is_presented_first(tmp_path):
    with FakeServer({"f": b"x"}, token="s3cret") as fake:
        getfile.download("f", port=fake.port, dest=tmp_path, token="s3cret")
        assert fake.requests[0] == b"AUTH1 s3cret"
        with pytest.raises(RemoteError, match="token"):
            getfile.download("f", port=fake.port, dest=tmp_path / "g", token="wrong")


def test_list_remote(server):
    entries = getfile.list_remote(".", port=server.port)
    expected = {("f", "big.bin"), ("f", "huge.bin"), ("f", "notes.txt"), ("d", "sub")}
    assert {(e.kind, e.path) for e in entries} == expected


def test_upload_then_refusal_then_force(tmp_path, server):
    local = tmp_path / "up.bin"
    local.write_bytes(BLOB)
    result = getfile_upload.upload(local, "inbox", port=server.port)
    assert result.remote_path == "inbox/up.bin" and server.uploads["inbox/up.bin"] == BLOB
    server.files["inbox/up.bin"] = b"there"
    with pytest.raises(RemoteError, match="already exists"):
        getfile_upload.upload(local, "inbox", port=server.port)
    getfile_upload.upload(local, "inbox", port=server.port, force=True)


def test_upload_of_a_directory_says_put_takes_one_file(tmp_path, server):
    with pytest.raises(DestinationError, match="is a directory; put uploads one file at a time"):
        getfile_upload.upload(tmp_path, "inbox", port=server.port)
    assert not server.uploads


def test_legacy_download(tmp_path):
    with FakeServer({"dir/f.bin": BLOB}, legacy=True) as fake:
        result = getfile_legacy.legacy_download("dir/f.bin", port=fake.port, dest=tmp_path)
        assert not result.verified and (tmp_path / "f.bin").read_bytes() == BLOB
        with pytest.raises(TransferInterrupted, match="sent nothing"):
            getfile_legacy.legacy_download("missing", port=fake.port, dest=tmp_path)
    assert tree_of(tmp_path) == {"f.bin"}


def test_upload_refused_midway_reports_the_servers_reason(tmp_path, server):
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(32 << 20))
    server.faults.put_fails_after = 1 << 20
    with pytest.raises(RemoteError, match="no space") as caught:
        getfile_upload.upload(local, ".", port=server.port)
    assert caught.value.code == "no-space"


def test_resume_at_random_offsets_is_always_identical(tmp_path, server):
    """Cut at 20 random places, resume each time: the result is byte-identical every time."""
    rng = random.Random(7)
    for round_ in range(20):
        dest = tmp_path / str(round_)
        dest.mkdir()
        server.faults = Faults(short_body=rng.randrange(1, len(BLOB)))
        with pytest.raises(TransferInterrupted):
            getfile.download("big.bin", port=server.port, dest=dest)
        server.faults = Faults()
        result = getfile.download("big.bin", port=server.port, dest=dest)
        assert result.resumed_from > 0 or len(BLOB) - server.faults.short_body == 0
        assert (dest / "big.bin").read_bytes() == BLOB
        assert [p.name for p in dest.iterdir()] == ["big.bin"]


def test_second_download_of_the_same_part_is_refused_while_the_first_runs(tmp_path, server):
    """Two runs never write the same part file at once (it is locked)."""
    server.faults.stall_after = 10_000
    cancel = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            getfile.download("big.bin", port=server.port, dest=tmp_path, cancel=cancel)
        except BaseException as exc:
            errors.append(exc)

    def part_has_10k() -> bool:
        return any(p.stat().st_size == 10_000 for p in tmp_path.glob("*.part"))

    thread = threading.Thread(target=first)
    thread.start()
    try:
        for _ in range(1500):  # up to 30 s
            if part_has_10k():
                break
            time.sleep(0.02)
        assert part_has_10k()
        server.faults = Faults()
        with pytest.raises(DestinationError, match="another download"):
            getfile.download("big.bin", port=server.port, dest=tmp_path)
    finally:
        cancel.set()
        thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], Cancelled)
    assert not (tmp_path / "big.bin").exists()
