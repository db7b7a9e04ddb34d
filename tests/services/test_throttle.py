"""Wrong tokens throttled per source address, with no sockets: a fake clock, real shared records."""

from __future__ import annotations

import os

import pytest

from sockkit import ofd
from sockkit.services.actions import Peer
from sockkit.services.getfile import GetfileService, ServedRoot
from sockkit.services.getfile.slots import LocalSlots
from sockkit.services.getfile.throttle import BURST, RECORD_SIZE, REFILL, SETS, Throttle, Throttled, source_of
from tests.services.getfile_wire import Wire


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["shared", "local"])
def store(request):
    if request.param == "shared":
        return ofd.Records("test-tokens", SETS, RECORD_SIZE)
    return ofd.LocalRecords(SETS, RECORD_SIZE)


def test_sources_group_ipv6_by_64_and_unmap_ipv4():
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_of("fe80::1%eth0") == "fe80::/64"


def test_a_burst_then_one_try_per_refill(store):
    clock = Clock()
    throttle = Throttle(store, clock)
    for _ in range(BURST - 1):
        assert throttle.wait("192.0.2.7") == 0
        assert throttle.failed("192.0.2.7") is False
    assert throttle.failed("192.0.2.7") is True  # the last try: logged
    assert throttle.wait("192.0.2.7") == pytest.approx(REFILL)
    assert throttle.wait("192.0.2.8") == 0  # another source is not slowed
    clock.now += REFILL / 2
    assert throttle.wait("192.0.2.7") == pytest.approx(REFILL / 2)
    clock.now += REFILL / 2
    assert throttle.wait("192.0.2.7") == 0
    assert throttle.failed("192.0.2.7") is False  # out again, but logged a moment ago
    clock.now += 60 * REFILL
    assert throttle.wait("192.0.2.7") == 0


def test_many_other_sources_do_not_make_the_table_forget_a_throttled_one(store):
    clock = Clock()
    throttle = Throttle(store, clock)
    for _ in range(BURST):
        throttle.failed("198.51.100.1")
    for index in range(20_000):
        throttle.failed(f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}")
    assert throttle.wait("198.51.100.1") > 0


def test_the_count_holds_across_processes():
    """A forked process spends the tries; the parent finds the source throttled (one table)."""
    clock = Clock()
    throttle = Throttle(ofd.Records("test-tokens", SETS, RECORD_SIZE), clock)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        for _ in range(BURST):
            throttle.failed("192.0.2.7")
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert throttle.wait("192.0.2.7") > 0 and throttle.wait("192.0.2.9") == 0


def test_service_stops_comparing_and_logs_the_source_once(tmp_path):
    """Past the burst a source's tokens are refused unchecked -- the right one too, until a try is
    earned -- with one log line; another source is unaffected; a right token costs nothing."""
    clock, logged = Clock(), []
    service = GetfileService(ServedRoot(str(tmp_path)), token="s3cret", slots=LocalSlots(4), log=logged.append,
                             throttle=Throttle(ofd.LocalRecords(SETS, RECORD_SIZE), clock))
    for _ in range(BURST * 3):
        assert service.check_token("s3cret", "192.0.2.50") is None
    answers = [service.check_token("guess", "192.0.2.7") for _ in range(BURST + 5)]
    assert [type(a).__name__ for a in answers] == ["Refused"] * BURST + ["Throttled"] * 5
    assert "try again in 1 s" in answers[-1].message
    assert isinstance(service.check_token("s3cret", "192.0.2.7"), Throttled)
    assert service.check_token("s3cret", "192.0.2.8") is None
    assert len(logged) == 1 and "too many wrong tokens from 192.0.2.7" in logged[0]
    clock.now += REFILL
    assert service.check_token("s3cret", "192.0.2.7") is None


def test_a_throttled_auth1_is_answered_and_closed_without_a_log_line_per_connection(tmp_path):
    clock, logged = Clock(), []
    service = GetfileService(ServedRoot(str(tmp_path)), token="s3cret", slots=LocalSlots(4), log=logged.append,
                             throttle=Throttle(ofd.LocalRecords(SETS, RECORD_SIZE), clock))
    peer = Peer("192.0.2.7", 4000)
    for _ in range(BURST + 20):
        wire = Wire(service.connect(peer)).send(b"AUTH1 guess\n")
        assert wire.take_error()[0] == "auth-required" and wire.closed
    assert wire.out == b"" and len(logged) == BURST + 1  # one per compared guess, one for the source
