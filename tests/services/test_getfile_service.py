"""The getfile service without sockets: requests in, actions out, against a real directory."""

from __future__ import annotations

import os
import stat

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockkit.protocols.getfile import MAX_LINE, Get, List, Put, format_request
from sockkit.services.actions import Peer, Send, SendFile, Wait
from sockkit.services.getfile import GetfileService, ServedRoot, listing, upload
from sockkit.services.getfile.connection import INLINE_BODY
from sockkit.services.getfile.digest import DigestCache, hash_descriptor
from sockkit.services.getfile.root import RESERVED_PREFIX, is_reserved
from sockkit.services.getfile.slots import LocalSlots, SharedSlots, make_slots
from sockkit.services.getfile.transfers import ANSWER_BUDGET
from sockkit.writeback import WRITEBACK_BYTES
from tests.services.getfile_wire import Wire
from tests.uploads import held_uploads

PEER = Peer("127.0.0.1", 40000)
BIG = bytes(range(256)) * 1024  # 256 KiB: past INLINE_BODY, so it travels as a SendFile


def digest_of(data: bytes) -> str:
    return "xxh3-128:" + xxhash.xxh3_128(data).hexdigest()


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello world\n")
    (root / "empty").write_bytes(b"")
    (root / "big.bin").write_bytes(BIG)
    (root / "sub").mkdir()
    (root / "sub" / "deep.txt").write_bytes(b"deep\n")
    (root / "with space é.txt").write_bytes(b"unicode\n")
    (tmp_path / "secret").write_bytes(b"TOP SECRET\n")
    return root


def service_for(root, **kwargs) -> tuple[GetfileService, list[str]]:
    logged: list[str] = []
    kwargs.setdefault("slots", LocalSlots(64))
    return GetfileService(ServedRoot(str(root)), log=logged.append, **kwargs), logged


def wire(root, **kwargs) -> Wire:
    service, _ = service_for(root, **kwargs)
    return Wire(service.connect(PEER))


def get(path: str, offset: int = 0, version: str | None = None) -> bytes:
    return format_request(Get(path, offset, version))


# -- GET1 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hello.txt", "empty", "big.bin", "sub/deep.txt", "with space é.txt",
                                  "./sub//deep.txt"])
def test_get_sends_exact_bytes_and_whole_file_digest(tree, name):
    """GET1 answers OK1 SIZE 0 MTIME DIGEST and exactly the file's bytes."""
    data = (tree / name).read_bytes()
    w = wire(tree).send(get(name))
    header, body = w.take_file()
    assert (header.size, header.offset, body) == (len(data), 0, data)
    assert header.digest == digest_of(data)
    assert header.mtime_ns == (tree / name).stat().st_mtime_ns
    assert not w.out and not w.closed


def test_large_body_goes_to_the_model_as_sendfile(tree):
    """Bodies past INLINE_BODY are handed over for zero-copy sending, small ones inline (the next
    request is answered once the file is out: the Wait's continuation)."""
    conn = service_for(tree)[0].connect(PEER)
    actions = conn.receive(get("big.bin") + get("hello.txt"))
    kinds = [type(a).__name__ for a in actions]
    assert kinds == ["Send", "SendFile", "Wait"]
    assert actions[1].count == len(BIG) > INLINE_BODY
    actions[1].file.close()
    assert [type(a).__name__ for a in actions[2].then()] == ["Send"]


def test_resume_with_matching_version_starts_at_offset(tree):
    w = wire(tree).send(get("big.bin", 1000, digest_of(BIG)))
    header, body = w.take_file()
    assert header.offset == 1000 and body == BIG[1000:]


def test_resume_with_changed_file_starts_over(tree):
    """VERSION of another file version: the answer starts at 0 and says so."""
    w = wire(tree).send(get("big.bin", 1000, digest_of(b"an older version")))
    header, body = w.take_file()
    assert header.offset == 0 and body == BIG


def test_offset_past_the_end_starts_over(tree):
    header, body = wire(tree).send(get("hello.txt", 999)).take_file()
    assert header.offset == 0 and body == b"hello world\n"


def test_pipelined_requests_answered_in_order_even_byte_by_byte(tree):
    requests = get("hello.txt") + format_request(List("sub")) + get("sub/deep.txt")
    w = wire(tree)
    for byte in requests:
        w.send(bytes([byte]))
    assert w.take_file()[1] == b"hello world\n"
    assert w.take_line() == b"OK1 1\n"
    assert w.take_line().endswith(b" deep.txt\n")
    assert w.take_file()[1] == b"deep\n"


# -- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "code"), [
    (b"GET1 0 - nothing-here", "not-found"),
    (b"GET1 0 - sub", "is-directory"),
    (b"GET1 0 - .", "is-directory"),
    (b"GET1 0 - hello.txt/x", "not-found"),
    (b"GET1 0 - ../secret", "outside-root"),
    (b"GET1 0 - sub/../../secret", "outside-root"),
    (b"GET1 0 - sub/../hello.txt", "outside-root"),
    (b"GET1 0 - /etc/passwd", "outside-root"),
    (b"GET1 0 - %2e%2e/secret", "outside-root"),
    (b"GET1 0 - %2F%2e%2E/secret", "outside-root"),
    (b"GET1 0 - " + b"a" * 300, "not-found"),
])
def test_refusals_keep_the_connection_open(tree, line, code):
    """Path errors answer ERR1 CODE MESSAGE and the next request is still served."""
    w = wire(tree).send(line + b"\n" + get("hello.txt"))
    got_code, message = w.take_error()
    assert got_code == code and message
    assert w.take_file()[1] == b"hello world\n"
    assert not w.closed


@pytest.mark.parametrize(("line", "code"), [
    (b"GET1 0 - a%00b", "bad-request"),
    (b"GET1 0 - a\x00b", "bad-request"),
    (b"GET1 0 - \xff\xfe", "bad-request"),
    (b"GET1 0 - a%zz", "bad-request"),
    (b"GET1 x - hello.txt", "bad-request"),
    (b"GET1 0 hello.txt", "bad-request"),
    (b"LIST1 .\nFROB1 x", "bad-request"),
    (b"GET1 0 - " + b"%41" * 1400, "too-long"),
])
def test_protocol_errors_close_the_connection(tree, line, code):
    w = wire(tree).send(line + b"\n")
    if line.startswith(b"LIST1"):
        count = int(w.take_line().split()[1])
        for _ in range(count):
            w.take_line()
    assert w.take_error()[0] == code
    assert w.closed and not w.out


def test_over_long_line_is_refused_without_waiting_for_a_newline(tree):
    w = wire(tree).send(b"GET1 0 - " + b"a" * MAX_LINE)
    assert w.take_error()[0] == "too-long" and w.closed


def test_fifo_is_refused_without_blocking(tree):
    os.mkfifo(tree / "pipe")
    w = wire(tree).send(get("pipe"))
    assert w.take_error()[0] == "not-regular"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_device_is_refused_without_being_opened(tree):
    os.mknod(tree / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    assert wire(tree).send(get("zero")).take_error()[0] == "not-regular"


def test_unix_socket_is_refused(tree):
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tree / "sock"))
        assert wire(tree).send(get("sock")).take_error()[0] == "not-regular"


@pytest.mark.parametrize(("link", "target", "code"), [
    ("pw", "/etc/passwd", "outside-root"),
    ("zero", "/dev/zero", "outside-root"),
    ("up", "../secret", "outside-root"),
    ("subup", "sub/../../secret", "outside-root"),
    ("outdir", "..", "outside-root"),
    ("loop", "loop", "not-found"),
    ("dangling", "missing", "not-found"),
])
def test_symlinks_leaving_the_root_are_refused(tree, link, target, code):
    (tree / link).symlink_to(target)
    w = wire(tree).send(get(link) + get(link + "/secret") + get(link + "/root/hello.txt"))
    for _ in range(3):
        assert w.take_error()[0] in (code, "not-found", "is-directory")
    assert b"SECRET" not in w.out


def test_symlinked_directory_pointing_outside_is_refused(tree, tmp_path):
    (tree / "etc").symlink_to(tmp_path)
    assert wire(tree).send(get("etc/secret")).take_error()[0] == "outside-root"
    assert wire(tree).send(format_request(List("etc"))).take_error()[0] == "outside-root"


def test_symlinks_inside_the_root_are_followed(tree):
    (tree / "alias").symlink_to("sub/deep.txt")
    (tree / "sub" / "back").symlink_to("../hello.txt")
    (tree / "subdir").symlink_to("sub")
    (tree / "absolute").symlink_to(os.path.realpath(tree) + "//sub/./deep.txt")
    (tree / "absdir").symlink_to(os.path.realpath(tree / "sub"))
    w = wire(tree).send(get("alias") + get("sub/back") + get("subdir/deep.txt") + get("absolute")
                        + get("absdir/deep.txt"))
    assert [w.take_file()[1] for _ in range(5)] == [b"deep\n", b"hello world\n", b"deep\n", b"deep\n", b"deep\n"]


@pytest.mark.parametrize("target", ["{root}/../secret", "{root}/sub/../../secret", "{root}x/secret", "{parent}",
                                    "{root}/../root/../secret"])
def test_absolute_symlinks_must_stay_under_the_root(tree, target):
    root = os.path.realpath(tree)
    (tree / "link").symlink_to(target.format(root=root, parent=os.path.dirname(root)))
    w = wire(tree).send(get("link") + get("link/secret"))
    assert w.take_error()[0] in ("outside-root", "not-found")
    assert w.take_error()[0] in ("outside-root", "not-found")
    assert b"SECRET" not in w.out


def test_refusals_are_logged_with_the_reason(tree):
    service, logged = service_for(tree)
    Wire(service.connect(PEER)).send(get("../secret"))
    assert len(logged) == 1 and "outside-root" in logged[0] and "127.0.0.1:40000" in logged[0]


# -- the chapter's protocol ------------------------------------------------------------------------


def test_legacy_request_gets_raw_bytes_then_close(tree):
    w = wire(tree).send(b"big.bin\n")
    assert bytes(w.out) == BIG and w.closed


def test_legacy_windows_separators_and_no_newline_before_eof(tree):
    w = wire(tree).send(b"sub\\deep.txt").send(b"")
    assert bytes(w.out) == b"deep\n" and w.closed


@pytest.mark.parametrize("line", [b"../secret", b"/etc/passwd", b"sub", b"missing", b"a\x00b", b"\xff"])
def test_legacy_errors_close_with_no_bytes(tree, line):
    service, logged = service_for(tree)
    w = Wire(service.connect(PEER)).send(line + b"\n")
    assert w.closed and not w.out
    assert logged


# -- LIST1 / TREE1 -------------------------------------------------------------------------------


def test_list_shows_files_and_directories(tree):
    (tree / "alias").symlink_to("hello.txt")
    (tree / "pw").symlink_to("/etc/passwd")
    os.mkfifo(tree / "pipe")
    w = wire(tree).send(b"LIST1 .\n")
    count = int(w.take_line().split()[1])
    lines = [w.take_line().decode() for _ in range(count)]
    names = {line.split(" ", 3)[3].rstrip("\n"): line[0] for line in lines}
    assert names == {"alias": "f", "big.bin": "f", "empty": "f", "hello.txt": "f", "sub": "d",
                     "with space é.txt": "f"}


def test_tree_lists_every_regular_file_recursively(tree):
    (tree / "sub" / "more").mkdir()
    (tree / "sub" / "more" / "x").write_bytes(b"x")
    (tree / "sub" / "cycle").symlink_to("..")
    w = wire(tree).send(b"TREE1 sub\n")
    count = int(w.take_line().split()[1])
    paths = sorted(w.take_line().decode().split(" ", 3)[3].rstrip("\n") for _ in range(count))
    assert paths == ["deep.txt", "more/x"]


def test_names_that_are_not_utf8_are_not_listed(tree):
    os.close(os.open(os.path.join(os.fsencode(tree), b"bad\xff"), os.O_CREAT | os.O_WRONLY))
    w = wire(tree).send(b"LIST1 .\n")
    assert w.take_line() == b"OK1 5\n"


def test_absurd_tree_is_refused_not_truncated(tree, monkeypatch):
    monkeypatch.setattr(listing, "MAX_ENTRIES", 3)
    w = wire(tree).send(b"TREE1 .\n" + b"LIST1 sub\n")
    assert w.take_error()[0] == "not-permitted"
    assert w.take_line() == b"OK1 1\n"


# -- PUT1 ----------------------------------------------------------------------------------------


def put(path: str, data: bytes, overwrite: bool = False, digest: str | None = None) -> bytes:
    return format_request(Put(path, len(data), digest or digest_of(data), overwrite)) + data


def temp_files(root) -> list[str]:
    """Files uploads hold under ``root``: reserved names, or unnamed files this process has open."""
    return held_uploads(root, [os.getpid()])


@pytest.fixture(params=["unnamed", "reserved-name"])
def strategy(request, monkeypatch):
    """Uploads both ways: an unnamed O_TMPFILE file, and the fallback for filesystems (or
    processes without /proc) where there is none, a file under a reserved name."""
    if request.param == "reserved-name":
        monkeypatch.setattr(upload, "unnamed_files_possible", lambda: False)
    elif not upload.unnamed_files_possible():
        pytest.skip("no O_TMPFILE or no /proc here")
    return request.param


def test_put_refused_without_allow_upload(tree):
    w = wire(tree).send(put("new.txt", b"x"))
    assert w.take_error()[0] == "upload-disabled"
    assert not (tree / "new.txt").exists()


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 300_000, 2 * WRITEBACK_BYTES + 5])
def test_put_stores_a_verified_file(tree, strategy, size):
    data = os.urandom(size)
    w = wire(tree, allow_upload=True).send(put("sub/new.bin", data) + get("hello.txt"))
    assert w.take_line() == b"OK1 0\n"
    assert w.take_line() == f"OK1 {size}\n".encode()
    assert (tree / "sub" / "new.bin").read_bytes() == data
    assert w.take_file()[1] == b"hello world\n"
    assert temp_files(tree) == []


def test_put_body_in_pieces(tree):
    data = os.urandom(5000)
    w = wire(tree, allow_upload=True)
    line_and_body = put("pieces", data)
    for start in range(0, len(line_and_body), 777):
        w.send(line_and_body[start:start + 777])
    assert w.take_line() == b"OK1 0\n" and w.take_line() == b"OK1 5000\n"
    assert (tree / "pieces").read_bytes() == data


def test_put_never_overwrites_without_the_flag(tree, strategy):
    # The client waits for OK1 0 before sending the body; here it never comes.
    w = wire(tree, allow_upload=True).send(format_request(Put("hello.txt", 3, digest_of(b"new"))))
    assert w.take_error()[0] == "exists"
    assert (tree / "hello.txt").read_bytes() == b"hello world\n"
    w.send(put("hello.txt", b"new", overwrite=True))
    assert w.take_line() == b"OK1 0\n" and w.take_line() == b"OK1 3\n"
    assert (tree / "hello.txt").read_bytes() == b"new"


def test_put_with_wrong_digest_stores_nothing(tree, strategy):
    w = wire(tree, allow_upload=True).send(put("bad.bin", b"payload", digest=digest_of(b"other")))
    assert w.take_line() == b"OK1 0\n"
    assert w.take_error()[0] == "corrupt"
    assert not (tree / "bad.bin").exists() and temp_files(tree) == []
    assert not w.closed


def test_disconnect_mid_upload_leaves_no_temp_file(tree, strategy):
    service, _ = service_for(tree, allow_upload=True)
    conn = service.connect(PEER)
    w = Wire(conn).send(put("half.bin", os.urandom(10_000))[:-5000])
    assert temp_files(tree)
    w.send(b"")
    conn.close()
    assert temp_files(tree) == [] and not (tree / "half.bin").exists()


def test_close_mid_upload_leaves_no_temp_file(tree, strategy):
    service, _ = service_for(tree, allow_upload=True)
    conn = service.connect(PEER)
    Wire(conn).send(put("half.bin", os.urandom(10_000))[:-5000])
    conn.close()
    assert temp_files(tree) == []


@pytest.mark.parametrize(("path", "code"), [("../escape", "outside-root"), ("/tmp/x", "outside-root"),
                                            ("sub", "is-directory"), ("nodir/x", "not-found"), (".", "is-directory")])
def test_put_outside_or_onto_a_directory_is_refused(tree, path, code):
    w = wire(tree, allow_upload=True).send(format_request(Put(path, 1, digest_of(b"x"))))
    assert w.take_error()[0] == code


def test_put_through_symlinked_dir_outside_is_refused(tree, tmp_path):
    (tree / "out").symlink_to(tmp_path)
    w = wire(tree, allow_upload=True).send(format_request(Put("out/planted", 1, digest_of(b"x"))))
    assert w.take_error()[0] == "outside-root"
    assert not (tmp_path / "planted").exists()


def test_upload_in_progress_is_invisible_and_unreachable(tree, strategy):
    """While A uploads, B can neither see A's file (LIST1, TREE1) nor reach it by any name (GET1,
    PUT1 with overwrite, LIST1, TREE1, the chapter's bare path), and what lands under A's name is
    exactly A's bytes (issue 16: B used to replace A's temporary file and A was told OK)."""
    service, _ = service_for(tree, allow_upload=True)
    data = os.urandom(100_000)
    owner = Wire(service.connect(PEER)).send(put("sub/a.bin", data)[:-50_000])
    assert owner.take_line() == b"OK1 0\n"
    on_disk = sorted(os.listdir(tree / "sub"))
    names = [name for name in on_disk if name != "deep.txt"]
    assert len(names) == (strategy == "reserved-name")  # unnamed: nothing at all in the directory
    spy = Wire(service.connect(PEER)).send(b"LIST1 sub\n" + b"TREE1 .\n")
    listed = spy.out.decode()
    assert "deep.txt" in listed and RESERVED_PREFIX not in listed and "a.bin" not in listed
    for name in names or [f"{RESERVED_PREFIX}0123456789abcdef.tmp"]:
        for request in (get(f"sub/{name}"), b"LIST1 sub/" + name.encode() + b"\n",
                        b"TREE1 sub/" + name.encode() + b"\n"):
            assert wire(tree, allow_upload=True).send(request).take_error()[0] == "not-found"
        thief = wire(tree, allow_upload=True).send(put(f"sub/{name}", b"B's bytes", overwrite=True))
        assert thief.take_error()[0] == "not-found"
        legacy = wire(tree).send(f"sub/{name}\n".encode())
        assert legacy.closed and not legacy.out
    assert sorted(os.listdir(tree / "sub")) == on_disk  # nothing was written beside it either
    owner.send(data[-50_000:])
    assert owner.take_line() == b"OK1 100000\n"
    assert (tree / "sub" / "a.bin").read_bytes() == data
    assert temp_files(tree) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_unnamed_upload_gets_its_only_name_at_the_end(tree, overwrite):
    """With O_TMPFILE the body has no name until it is linked into place: the directory holds
    nothing new mid-upload, and after it the final name and nothing else."""
    if not upload.unnamed_files_possible():
        pytest.skip("no O_TMPFILE or no /proc here")
    service, _ = service_for(tree, allow_upload=True)
    data = os.urandom(3000)
    target = "hello.txt" if overwrite else "fresh.txt"
    before = sorted(os.listdir(tree))
    w = Wire(service.connect(PEER)).send(put(target, data, overwrite=overwrite)[:-1000])
    assert sorted(os.listdir(tree)) == before and len(temp_files(tree)) == 1
    w.send(data[-1000:])
    assert w.take_line() == b"OK1 0\n" and w.take_line() == b"OK1 3000\n"
    assert sorted(os.listdir(tree)) == sorted({*before, target})
    assert (tree / target).read_bytes() == data and temp_files(tree) == []


def test_reserved_names_are_unreachable_even_through_a_symlink(tree):
    """A reserved name on disk (a fallback upload in progress, or one a killed server left) is
    never listed, opened or walked through, even by a link whose target names it."""
    (tree / f"{RESERVED_PREFIX}left.tmp").write_bytes(b"half an upload")
    (tree / f"{RESERVED_PREFIX}dir").mkdir()
    (tree / "alias").symlink_to(f"{RESERVED_PREFIX}left.tmp")
    (tree / "alias-dir").symlink_to(f"{RESERVED_PREFIX}dir")
    w = wire(tree).send(b"LIST1 .\n" + b"TREE1 .\n" + get("alias") + b"LIST1 alias-dir\n")
    listing = w.take_line()
    assert listing == b"OK1 5\n"  # the five ordinary entries; no reserved name, no link to one
    listings, _, refusals = bytes(w.out).partition(b"ERR1")
    assert RESERVED_PREFIX.encode() not in listings and b"alias" not in listings
    assert (b"ERR1" + refusals).count(b"ERR1 not-found") == 2


def test_upload_without_a_digest_checks_the_size(tree):
    """A transport that carries no digest (digest None) still never stores a short body."""
    short = upload.Upload(ServedRoot(str(tree)), Put("short.bin", 10, None))
    short.feed(memoryview(b"12345"))
    with pytest.raises(upload.Refused) as refused:
        short.complete()
    assert refused.value.code == "corrupt" and not (tree / "short.bin").exists()
    whole = upload.Upload(ServedRoot(str(tree)), Put("whole.bin", 5, None))
    whole.feed(memoryview(b"12345"))
    whole.complete()
    assert (tree / "whole.bin").read_bytes() == b"12345" and temp_files(tree) == []


# -- AUTH1 ---------------------------------------------------------------------------------------


def test_token_required_first(tree):
    w = wire(tree, token="s3cret").send(get("hello.txt"))
    assert w.take_error()[0] == "auth-required" and w.closed


def test_wrong_token_closes(tree):
    w = wire(tree, token="s3cret").send(b"AUTH1 guess\n" + get("hello.txt"))
    assert w.take_error()[0] == "auth-required" and w.closed and not w.out


def test_right_token_opens_the_session(tree):
    w = wire(tree, token="s3cret").send(b"AUTH1 s3cret\n" + get("hello.txt"))
    assert w.take_line() == b"OK1 0\n"
    assert w.take_file()[1] == b"hello world\n"


def test_legacy_request_refused_when_a_token_is_set(tree):
    w = wire(tree, token="s3cret").send(b"hello.txt\n")
    assert w.closed and not w.out


def test_auth_without_a_token_configured_is_accepted(tree):
    assert wire(tree).send(b"AUTH1 anything\n").take_line() == b"OK1 0\n"


# -- transfer slots ------------------------------------------------------------------------------


@pytest.mark.parametrize("slots_kind", [LocalSlots, SharedSlots])
def test_busy_past_max_transfers_then_free_again(tree, slots_kind):
    service, _ = service_for(tree, slots=slots_kind(1))
    first = service.connect(PEER)
    held = first.receive(get("big.bin"))
    second = Wire(service.connect(PEER)).send(get("big.bin"))
    assert second.take_error()[0] == "busy" and second.closed
    small = Wire(service.connect(PEER)).send(get("hello.txt"))
    assert small.take_file()[1] == b"hello world\n"  # inline bodies take no slot
    for action in held:
        if isinstance(action, SendFile):
            action.file.close()  # the model finished sending: the slot is free
    third = Wire(service.connect(PEER)).send(get("big.bin"))
    assert third.take_file()[1] == BIG


def test_one_connection_holds_one_slot_for_its_pipelined_files(tree):
    service, _ = service_for(tree, slots=LocalSlots(1))
    w = Wire(service.connect(PEER)).send(get("big.bin") * 3)
    assert [w.take_file()[1] for _ in range(3)] == [BIG] * 3


def test_pipelined_requests_are_answered_one_budget_at_a_time(tree):
    """1,100 pipelined requests in one read: one file (or ANSWER_BUDGET bytes of small answers) is
    answered, the rest wait behind a Wait(0) until those answers are out -- a client that never
    reads costs one answer and one open file, not 1,100 (the old code opened 32 files, then busy)."""
    conn = service_for(tree)[0].connect(PEER)
    actions = conn.receive(get("big.bin") * 1100)
    assert [type(a) for a in actions] == [Send, SendFile, Wait] and actions[2].seconds == 0
    actions[1].file.close()
    answered = 1
    while actions and isinstance(actions[-1], Wait):
        actions = actions[-1].then()
        files = [a for a in actions if isinstance(a, SendFile)]
        assert len(files) <= 1 and not any(b"busy" in a.data for a in actions if isinstance(a, Send))
        for action in files:
            action.file.close()
        answered += len(files)
    assert answered == 1100
    small = conn.receive(get("hello.txt") * 20_000)  # ~350 KiB of small answers: a budget's worth each time
    made = sum(len(a.data) for a in small if isinstance(a, Send))
    assert isinstance(small[-1], Wait) and ANSWER_BUDGET <= made < ANSWER_BUDGET + 200
    conn.close()


def test_slot_released_when_connection_closes(tree):
    service, _ = service_for(tree, slots=SharedSlots(1))
    conn = service.connect(PEER)
    actions = conn.receive(get("big.bin"))
    del actions  # the model dropped the file without closing it: garbage collection closes it
    conn.close()
    assert Wire(service.connect(PEER)).send(get("big.bin")).take_file()[1] == BIG


def test_make_slots_zero_means_unlimited():
    assert make_slots(0).acquire() is not None


# -- digests ---------------------------------------------------------------------------------------


def test_digest_cached_per_file_version(tree):
    cache = DigestCache()
    service, _ = service_for(tree, digests=cache)
    for _ in range(3):
        Wire(service.connect(PEER)).send(get("big.bin"))
    assert (cache.misses, cache.hits) == (1, 2)
    (tree / "big.bin").write_bytes(b"changed")
    header, body = Wire(service.connect(PEER)).send(get("big.bin")).take_file()
    assert header.digest == digest_of(b"changed") and body == b"changed"


def test_recently_changed_files_are_not_cached(tree):
    import time

    cache = DigestCache(clock=time.time)
    service, _ = service_for(tree, digests=cache)
    for _ in range(2):
        Wire(service.connect(PEER)).send(get("hello.txt"))
    assert cache.hits == 0


def test_hash_descriptor_matches_xxhash_over_chunks(tmp_path):
    data = os.urandom((1 << 20) * 2 + 17)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert hash_descriptor(fd, len(data)) == digest_of(data)
    finally:
        os.close(fd)


# -- pending requests and random input --------------------------------------------------------------


def test_pending_request_while_a_line_is_unfinished(tree):
    conn = service_for(tree)[0].connect(PEER)
    assert not conn.pending_request()
    assert conn.receive(b"GET1 0 - hel") == []
    assert conn.pending_request()
    Wire(conn).send(b"lo.txt\n")
    assert not conn.pending_request()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=st.one_of(
    st.binary(max_size=200),
    st.builds(lambda verb, rest: verb + rest,
              st.sampled_from([b"GET1 ", b"LIST1 ", b"TREE1 ", b"PUT1 ", b"AUTH1 "]), st.binary(max_size=200)),
    st.builds(lambda rest: b"GET1 0 - " + rest, st.text(max_size=60).map(lambda t: t.encode())),
))
def test_random_request_lines_never_raise_and_get_one_answer(tree, line):
    """Whatever one line holds: one answer line (or, for a first bare line, the chapter's
    close-with-nothing or raw bytes), never an exception, never a byte from outside the root."""
    line = line.replace(b"\n", b"")
    conn = service_for(tree, allow_upload=True)[0].connect(PEER)
    w = Wire(conn).send(line + b"\n")
    if not w.closed and not line.startswith(b"PUT1 "):
        w.send(b"")
    conn.close()
    assert b"TOP SECRET" not in w.out
    if w.out.startswith((b"OK1", b"ERR1")):
        first = w.take_line()
        assert first.count(b"\n") == 1
    assert temp_files(tree) == []


# -- a full disk -----------------------------------------------------------------------------------


def test_put_larger_than_free_space_is_refused_up_front(tiny_disk):
    w = wire(tiny_disk, allow_upload=True).send(format_request(Put("huge", 4 << 20, digest_of(b""))))
    assert w.take_error()[0] == "no-space"
    assert os.listdir(tiny_disk) == []


def test_disk_filling_up_mid_upload_answers_no_space_and_keeps_nothing(tiny_disk):
    """The disk fills after OK1 0: the body is read to its end, then no-space; no temp file stays."""
    data = os.urandom(600 << 10)
    service, _ = service_for(tiny_disk, allow_upload=True)
    w = Wire(service.connect(PEER)).send(format_request(Put("late", len(data), digest_of(data))))
    assert w.take_line() == b"OK1 0\n"
    (tiny_disk / "filler").write_bytes(b"\0" * (700 << 10))  # someone else takes the space
    w.send(data).send(get("filler"))
    assert w.take_error()[0] == "no-space"
    assert sorted(os.listdir(tiny_disk)) == ["filler"]
    assert w.take_file()[0].size == 700 << 10  # the connection is still usable


PATHS = st.sampled_from(["hello.txt", "big.bin", "sub", "sub/deep.txt", "../secret", "/etc/passwd", "", ".",
                         "nothing", "sub/../../secret", "with space é.txt", "a\nb", "%", "\x00"])
REQUEST_LINES = st.one_of(
    st.builds(lambda p, o: format_request(Get(p, o)), PATHS, st.integers(0, 1 << 20)),
    st.builds(lambda p: format_request(List(p)), PATHS),
    st.builds(lambda p: b"TREE1 " + p.encode("utf-8", "surrogateescape") + b"\n", PATHS),
    st.builds(lambda p, n: format_request(Put(p, n, digest_of(b"x" * n))) + b"x" * n, PATHS, st.integers(0, 300)),
    st.just(b"AUTH1 x\n"),
    st.binary(max_size=80).map(lambda b: b + b"\n"),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(REQUEST_LINES, max_size=8), cuts=st.lists(st.integers(1, 400), max_size=10))
def test_random_streams_in_random_pieces(tree, lines, cuts):
    """Any sequence of requests, cut anywhere: no internal error, nothing from outside the root,
    no temporary file left once the connection is closed."""
    service, logged = service_for(tree, allow_upload=True)
    conn = service.connect(PEER)
    stream = b"".join(lines)
    w = Wire(conn)
    for cut in [*cuts, len(stream)]:
        if w.closed or not stream:
            break
        w.send(stream[:cut])
        stream = stream[cut:]
    if not w.closed:
        w.send(b"")
    conn.close()
    assert b"ERR1 internal" not in w.out and not any("internal error" in line for line in logged)
    assert b"TOP SECRET" not in w.out
    assert temp_files(tree) == []
    for name in os.listdir(tree):  # uploads only ever land inside the root
        assert not is_reserved(name)


def test_bare_list_verb_lists_the_root(tree):
    w = wire(tree).send(b"LIST1\r\n")
    assert w.take_line() == b"OK1 5\n"


def test_out_of_descriptors_is_busy_not_a_crash(tree):
    """With every descriptor in use, a GET is answered ERR1 busy (real EMFILE, in a child process)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, resource
        from sockkit.services.actions import Peer
        from sockkit.services.getfile import GetfileService, ServedRoot
        from sockkit.services.getfile.slots import SharedSlots
        service = GetfileService(ServedRoot({str(tree)!r}), slots=SharedSlots(4))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        hoard = []
        try:
            while True:
                hoard.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        for line in (b"GET1 0 - big.bin\\n", b"LIST1 .\\n", b"TREE1 .\\n"):
            out = b"".join(a.data for a in service.connect(Peer("127.0.0.1", 1)).receive(line) if hasattr(a, "data"))
            print(out.decode().split()[1])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["busy", "busy", "busy"]


def test_a_flood_of_bad_requests_cannot_flood_the_log(tree):
    from sockkit.services.getfile.connection import MAX_LOG_LINES

    service, logged = service_for(tree)
    conn = service.connect(PEER)
    w = Wire(conn).send(get("nothing") * 1000)
    assert w.out.count(b"ERR1 not-found") == 1000
    conn.close()
    assert len(logged) == MAX_LOG_LINES + 1
    assert "980 more refusals" in logged[-1]
