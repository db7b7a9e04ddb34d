"""Stalled uploads give their disk space back when another upload needs it, with no sockets: a
1 MiB tmpfs, a fake clock, the records every process shares -- and a forked owner."""

from __future__ import annotations

import os

import pytest
import xxhash

from sockkit import ofd
from sockkit.protocols.getfile import Put, format_request
from sockkit.services.actions import Peer
from sockkit.services.getfile import GetfileService, ServedRoot
from sockkit.services.getfile.slots import LocalSlots
from sockkit.services.getfile.stalls import RECORD_SIZE, Stalls
from tests.services.getfile_wire import Wire

KIB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def digest_of(data: bytes) -> str:
    return "xxh3-128:" + xxhash.xxh3_128(data).hexdigest()


def put_head(path: str, data: bytes) -> bytes:
    return format_request(Put(path, len(data), digest_of(data)))


def used(root) -> int:
    fs = os.statvfs(root)
    return (fs.f_blocks - fs.f_bfree) * fs.f_frsize


@pytest.fixture
def server(tiny_disk):
    clock = Clock()
    stalls = Stalls(ofd.Records("test-uploads", 8, RECORD_SIZE), clock, after=30)
    service = GetfileService(ServedRoot(str(tiny_disk)), allow_upload=True, slots=LocalSlots(8), stalls=stalls)
    return service, clock, tiny_disk


def test_a_stalled_upload_gives_way_to_one_that_needs_its_room(server):
    """A holds 600 KiB of a 1 MiB disk and goes silent; 31 s later B needs 600 KiB: A's file is
    emptied, B is stored, and A's client is told 'busy ... send it again' with its next bytes and
    closed (before: B was refused no-space until A's idle timeout)."""
    service, clock, root = server
    a_data, b_data = os.urandom(700 * KIB), os.urandom(600 * KIB)
    a = Wire(service.connect(Peer("127.0.0.1", 1))).send(put_head("a.bin", a_data) + a_data[:600 * KIB])
    assert a.take_line() == b"OK1 0\n" and used(root) >= 600 * KIB
    clock.now += 31
    b = Wire(service.connect(Peer("127.0.0.1", 2))).send(put_head("b.bin", b_data) + b_data)
    assert b.take_line() == b"OK1 0\n" and b.take_line() == f"OK1 {len(b_data)}\n".encode()
    assert (root / "b.bin").read_bytes() == b_data
    a.send(a_data[600 * KIB:600 * KIB + 10])
    code, message = a.take_error()
    assert code == "busy" and "stalled" in message and "send it again" in message and a.closed
    assert os.listdir(root) == ["b.bin"]


def test_an_upload_that_is_only_slow_keeps_its_room(server):
    service, clock, _ = server
    a_data, b_data = os.urandom(700 * KIB), os.urandom(600 * KIB)
    a = Wire(service.connect(Peer("127.0.0.1", 1))).send(put_head("a.bin", a_data) + a_data[:600 * KIB])
    clock.now += 29
    b = Wire(service.connect(Peer("127.0.0.1", 2))).send(put_head("b.bin", b_data))
    assert b.take_error()[0] == "no-space"
    a.send(a_data[600 * KIB:])
    assert a.take_line() == b"OK1 0\n" and a.take_line() == f"OK1 {len(a_data)}\n".encode()


def test_a_full_disk_mid_body_reclaims_too(server):
    """B began while there was room; A then wrote more and stalled: B's writes meet a full disk,
    A's room is taken back and B goes on."""
    service, clock, root = server
    a_data, b_data = os.urandom(900 * KIB), os.urandom(400 * KIB)
    a = Wire(service.connect(Peer("127.0.0.1", 1))).send(put_head("a.bin", a_data) + a_data[:300 * KIB])
    b = Wire(service.connect(Peer("127.0.0.1", 2))).send(put_head("b.bin", b_data))
    assert b.take_line() == b"OK1 0\n"
    a.send(a_data[300 * KIB:700 * KIB])
    clock.now += 31
    b.send(b_data)
    assert b.take_line() == f"OK1 {len(b_data)}\n".encode()
    assert (root / "b.bin").read_bytes() == b_data


def test_the_owner_may_be_another_process(server):
    """Under the fork models the stalled upload lives in a process of its own, blocked: it is
    emptied from here through /proc, and it finds out with its next bytes."""
    service, clock, root = server
    data = os.urandom(700 * KIB)
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child: A's process
        a = Wire(service.connect(Peer("127.0.0.1", 1))).send(put_head("a.bin", data) + data[:600 * KIB])
        os.write(ready_w, b"1")
        os.read(go_r, 1)
        clock.now += 31  # its own clock (a copy): the same 31 s have passed for it
        a.send(data[600 * KIB:600 * KIB + 10])
        os._exit(0 if a.closed and b"stalled" in bytes(a.out) else 1)
    try:
        assert os.read(ready_r, 1) == b"1" and used(root) >= 600 * KIB
        clock.now += 31
        b_data = os.urandom(600 * KIB)
        b = Wire(service.connect(Peer("127.0.0.1", 2))).send(put_head("b.bin", b_data) + b_data)
        assert b.take_line() == b"OK1 0\n" and b.take_line() == f"OK1 {len(b_data)}\n".encode()
    finally:
        os.write(go_w, b"1")
        _, status = os.waitpid(child, 0)
        for fd in (go_r, go_w, ready_r, ready_w):
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_record_whose_descriptor_now_names_another_file_is_left_alone(tmp_path):
    """The pid and descriptor of a record can be used again; only the very file registered (same
    device and inode) is ever emptied."""
    clock = Clock()
    stalls = Stalls(ofd.LocalRecords(4, RECORD_SIZE), clock, after=30)
    path = tmp_path / "registered"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"x" * 10_000)
    stalls.register(fd)
    os.close(fd)
    other = tmp_path / "other"
    fd2 = os.open(other, os.O_RDWR | os.O_CREAT)  # likely the same number
    os.write(fd2, b"y" * 10_000)
    clock.now += 31
    assert stalls.reclaim() == 0 and other.stat().st_size == 10_000
    os.close(fd2)
