"""The PROXY protocol reader and writer, with no sockets: spec vectors, every refusal the spec
asks for, and hypothesis for round trips, arbitrary splits and arbitrary bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockkit.protocols.proxy_header import (
    DEFAULT_MAX_PAYLOAD,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_UNIQUE_ID,
    V1_MAX,
    V2_HEADER,
    V2_SIGNATURE,
    Command,
    Endpoint,
    HeaderReader,
    Parsed,
    ProxyHeaderError,
    crc32c,
    format_v1,
    format_v2,
)


def read_all(*chunks: bytes) -> Parsed | None:
    reader = HeaderReader()
    result = None
    for chunk in chunks:
        result = reader.receive(chunk)
        if result is not None:
            return result
    return result


def refused(data: bytes) -> str:
    with pytest.raises(ProxyHeaderError) as info:
        read_all(data)
    return str(info.value)


# --- what real senders put on the wire -----------------------------------------------------


def test_the_specs_v1_example():
    parsed = read_all(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n")
    assert parsed.header.version == 1
    assert parsed.header.source == Endpoint("192.168.0.1", 56324)
    assert parsed.header.destination == Endpoint("192.168.0.11", 443)
    assert parsed.rest == b"GET / HTTP/1.1\r\n"


def test_a_v2_header_as_haproxy_sent_it():
    """A hex dump of HAProxy's send-proxy-v2 in front of an HTTP request (TCP over IPv4)."""
    wire = bytes.fromhex("0d0a0d0a000d0a515549540a2111000cac130001ac130003a6520050") + b"GET /"
    parsed = read_all(wire)
    assert parsed.header.version == 2 and parsed.header.command is Command.PROXY
    assert parsed.header.source == Endpoint("172.19.0.1", 42578)
    assert parsed.header.destination == Endpoint("172.19.0.3", 80)
    assert parsed.rest == b"GET /"


def test_v1_tcp6_and_unknown():
    parsed = read_all(b"PROXY TCP6 2001:DB8::1 ::1 65535 0\r\n")
    assert parsed.header.source == Endpoint("2001:db8::1", 65535)
    assert parsed.header.destination == Endpoint("::1", 0)
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN anything at all 1 2\r\n"):
        parsed = read_all(line + b"x")
        assert parsed.header.source is None and parsed.rest == b"x"


def test_longest_v1_line_is_accepted():
    full = ":".join(["ffff"] * 8)
    line = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(line) == V1_MAX
    assert read_all(line).header.source is None


def test_v2_local_uses_the_connections_own_addresses():
    parsed = read_all(format_v2(None) + b"hello")
    assert parsed.header.command is Command.LOCAL and parsed.header.source is None
    assert parsed.rest == b"hello"


def test_v2_unix_and_udp_fall_back_to_the_real_endpoints():
    unix = V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", 216) + b"/a".ljust(108, b"\0") * 2
    assert read_all(unix).header.source is None
    udp = V2_SIGNATURE + bytes([0x21, 0x12]) + struct.pack("!H", 12) + bytes(12)
    assert read_all(udp).header.source is None


def test_v2_tlvs_and_crc():
    tlvs = ((PP2_TYPE_AUTHORITY, b"example.com"), (PP2_TYPE_UNIQUE_ID, b"u" * 128))
    wire = format_v2(Endpoint("10.0.0.1", 1234), Endpoint("10.0.0.2", 50007), tlvs=tlvs, crc=True)
    header = read_all(wire).header
    assert header.tlvs[:2] == tlvs and header.tlvs[2][0] == PP2_TYPE_CRC32C
    assert header.size == len(wire)


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720 / Castagnoli)


def test_mixed_families_are_written_as_ipv6():
    line = format_v1(Endpoint("::1", 5), Endpoint("127.0.0.1", 6))
    assert line == b"PROXY TCP6 ::1 ::ffff:7f00:1 5 6\r\n"
    assert read_all(line).header.destination == Endpoint("::ffff:7f00:1", 6)


# --- what must be refused -------------------------------------------------------------------

V1_BAD = {
    b"GET / HTTP/1.1\r\n": "no PROXY header",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n": "no PROXY header",
    b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n": "fields",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n": "holds b'\\n'",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n": "holds b'\\r'",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n": "fields",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n": "canonical",
    b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n": "canonical",
    b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n": "canonical",
    b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n": "not an IPv6",
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n": "not an IPv6",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n": "leading zeros",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n": "0 to 65535",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n": "0 to 65535",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n": "none of TCP4",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00\r\n": "holds b'\\x00'",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xc3\xa9\r\n": "holds b'\\xc3'",
    b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n": "no CRLF within 107",
}


@pytest.mark.parametrize("wire", list(V1_BAD), ids=[repr(w[:24]) for w in V1_BAD])
def test_v1_refusals(wire):
    assert V1_BAD[wire] in refused(wire)


def v2(version_command: int = 0x21, family_protocol: int = 0x11, payload: bytes = bytes(12),
       length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return V2_SIGNATURE + bytes([version_command, family_protocol]) + struct.pack("!H", size) + payload


V2_BAD = {
    "version 1 in a v2 header": (v2(0x11), "version 1, not 2"),
    "command 2": (v2(0x22), "neither LOCAL"),
    "family 4": (v2(family_protocol=0x41), "0x41"),
    "protocol 3": (v2(family_protocol=0x13), "0x13"),
    "INET with UNSPEC protocol": (v2(family_protocol=0x10), "0x10"),
    "addresses cut short": (v2(payload=bytes(11)), "need 12"),
    "IPv6 in 12 bytes": (v2(family_protocol=0x21), "need 36"),
    "TLV header cut short": (v2(payload=bytes(12) + b"\x04\x00"), "cut short"),
    "TLV overruns": (v2(payload=bytes(12) + b"\x04\x00\x05abc"), "announces 5"),
    "CRC of the wrong size": (v2(payload=bytes(12) + b"\x03\x00\x02ab"), "not 4"),
    "CRC that does not match": (v2(payload=bytes(12) + b"\x03\x00\x04abcd"), "does not match"),
    "unique id too long": (v2(payload=bytes(12) + b"\x05\x00\x81" + b"u" * 129), "unique id"),
    "payload past the bound": (v2(payload=b"", length=DEFAULT_MAX_PAYLOAD + 1), "at most"),
    "signature wrong": (b"\r\n\r\n\x00\r\nQUIT\r" + bytes(8), "not a PROXY v2"),
}


@pytest.mark.parametrize("case", list(V2_BAD))
def test_v2_refusals(case):
    wire, expected = V2_BAD[case]
    assert expected in refused(wire)


def test_a_flipped_bit_fails_the_crc():
    wire = bytearray(format_v2(Endpoint("10.0.0.1", 1234), Endpoint("10.0.0.2", 50007), crc=True))
    wire[V2_HEADER] ^= 0x01  # the source address
    assert "does not match" in refused(bytes(wire))


def test_refused_early_not_after_waiting():
    """A connection that cannot be starting a header is refused on its first bytes."""
    with pytest.raises(ProxyHeaderError):
        HeaderReader().receive(b"G")
    with pytest.raises(ProxyHeaderError):
        HeaderReader().receive(b"\r\n\r\n\x00\r\nX")
    with pytest.raises(ProxyHeaderError, match="version 3"):
        HeaderReader().receive(v2(0x31)[:16])  # before the payload it announces arrives


def test_close_before_the_header_is_complete():
    reader = HeaderReader()
    assert reader.receive(b"PROXY TCP4 1.2") is None
    with pytest.raises(ProxyHeaderError, match="closed after 14 bytes"):
        reader.receive(b"")


def test_a_reader_reads_one_header():
    reader = HeaderReader()
    assert reader.receive(format_v2(None)) is not None
    with pytest.raises(RuntimeError):
        reader.receive(b"more")


# --- hypothesis: round trips, splits, anything at all --------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
endpoints = st.one_of(
    st.tuples(ipv4, ports, ipv4, ports),
    st.tuples(ipv6, ports, ipv6, ports),
).map(lambda t: (Endpoint(t[0], t[1]), Endpoint(t[2], t[3])))
tlv_lists = st.lists(st.tuples(st.sampled_from([0x01, 0x02, 0x04, 0x05, 0x20, 0xE0]),
                               st.binary(max_size=100)), max_size=5)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


@given(endpoints, st.binary(max_size=64), st.booleans(), tlv_lists, st.booleans(),
       st.lists(st.integers(0, 10_000), max_size=8))
@settings(max_examples=300, deadline=None)
def test_round_trip_in_any_split(pair, rest, use_v2, tlvs, crc, cuts):
    source, destination = pair
    tlvs = tuple((kind, value[:128]) for kind, value in tlvs)
    wire = format_v2(source, destination, tlvs=tlvs, crc=crc) if use_v2 else format_v1(source, destination)
    parsed = read_all(*split(wire + rest, cuts))
    assert parsed is not None
    assert parsed.header.source == source and parsed.header.destination == destination
    assert parsed.header.size == len(wire)
    if use_v2:
        assert parsed.header.tlvs[:len(tlvs)] == tlvs
    # The client's first bytes: those that arrived in the same chunk as the header's end.
    assert rest.startswith(parsed.rest)


def outcome(chunks: list[bytes]):
    reader = HeaderReader()
    fed = 0
    for chunk in chunks:
        try:
            result = reader.receive(chunk)
        except ProxyHeaderError:
            return "refused"
        fed += len(chunk)
        if result is not None:
            return result.header, fed - len(result.rest)
        assert len(reader._buffer) < V1_MAX + V2_HEADER + DEFAULT_MAX_PAYLOAD, "buffer past its bound"
    return "incomplete"


prefixes = st.sampled_from([b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", V2_SIGNATURE,
                            V2_SIGNATURE + b"\x21\x11\x00\x0c", V2_SIGNATURE + b"\x20\x00\x00\x00"])


@given(prefixes, st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=10))
@settings(max_examples=1000, deadline=None)
def test_any_bytes_in_any_split_give_one_answer(prefix, tail, cuts):
    """Whatever arrives, the reader raises only ProxyHeaderError, holds a bounded buffer, and the
    way TCP splits the bytes never changes whether (or where) a header is found."""
    data = prefix + tail
    whole = outcome([data] if data else [])
    assert outcome(split(data, cuts)) == whole


@given(st.binary(min_size=1, max_size=200))
@settings(max_examples=500, deadline=None)
def test_end_of_stream_is_always_refused_before_a_header(data):
    reader = HeaderReader()
    try:
        if reader.receive(data) is not None:
            return
    except ProxyHeaderError:
        return
    with pytest.raises(ProxyHeaderError, match="closed after"):
        reader.receive(b"")
