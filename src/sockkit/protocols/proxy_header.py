"""The PROXY protocol, versions 1 and 2 (HAProxy's ``doc/proxy-protocol.txt``): the header a TCP
balancer puts in front of a client's first byte to say who the client really is.

Rule: pure. ``HeaderReader.receive(data)`` takes bytes as they arrive (``b""`` means the peer
closed its side, as ``socket.recv``) and answers ``None`` (not complete yet) or a ``Parsed``
(the header and the bytes after it), or raises ``ProxyHeaderError`` saying why. No sockets, no
clock; the caller applies the deadline.

Rule: strict and bounded. The spec forbids guessing whether a header is there, so a connection
whose first bytes cannot begin a header is refused at once, as is every field that is not exactly
what the spec allows (leading zeros, a lone CR or LF, a port past 65535, an unknown version,
command, family or protocol, a TLV that overruns the header, a CRC32C that does not match). At
most ``V1_MAX`` bytes are held for version 1 and ``V2_HEADER + max_payload`` for version 2.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
from dataclasses import dataclass

#: Longest version 1 line the spec allows, CRLF included ("PROXY UNKNOWN" with two full IPv6
#: addresses and two 5-digit ports); a line without its CRLF by then is invalid.
V1_MAX = 107
V1_PREFIX = b"PROXY "
#: The 12 bytes every version 2 header starts with (a NUL inside: never a C string).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Signature, version+command, family+protocol, payload length.
V2_HEADER = 16
#: Payload (addresses + TLVs) we accept after the 16 fixed bytes. The field allows 65,535; what
#: HAProxy actually sends (addresses, unique id <= 128 B, authority <= 255 B, the SSL TLVs) stays
#: well under 1 KiB, and 4 KiB per connection held by 1,024 connections is 4 MiB, not 64.
DEFAULT_MAX_PAYLOAD = 4096 - V2_HEADER

#: TLV types of spec section 2.2 that the reader checks or that callers may want by name.
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
#: The spec's bound on PP2_TYPE_UNIQUE_ID.
UNIQUE_ID_MAX = 128


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header; the message says what was wrong."""


class Command(enum.Enum):
    #: The balancer's own connection (a health check): use the connection's real endpoints.
    LOCAL = 0
    #: Relayed on behalf of a client: the header's source is the client.
    PROXY = 1


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int
    command: Command
    #: The client, or None where the header says to use the connection's own endpoints (LOCAL,
    #: v1 UNKNOWN, v2 UNSPEC) or names something that is not a TCP/IP address (AF_UNIX, datagrams),
    #: for which the spec lets a receiver fall back to the connection's endpoints.
    source: Endpoint | None
    #: The address the client connected to (the balancer's front end), or None as above.
    destination: Endpoint | None
    #: Version 2's type-length-value extensions, in order: (type, value).
    tlvs: tuple[tuple[int, bytes], ...] = ()
    #: Bytes the header took on the wire.
    size: int = 0


@dataclass(frozen=True, slots=True)
class Parsed:
    header: ProxyHeader
    #: What followed the header in the bytes received so far: the client's first bytes.
    rest: bytes


class HeaderReader:
    """Reads one PROXY header, v1 or v2, from the start of a connection, however it is split."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self.done = False

    def receive(self, data: bytes) -> Parsed | None:
        """Feed bytes; ``b""`` is the end of the stream. None: need more. Raises ProxyHeaderError.

        Holds at most one header's worth of bytes beyond the chunk it is given; once it has
        answered a ``Parsed`` (or raised), it takes nothing more.
        """
        if self.done:
            raise RuntimeError("the PROXY header was already read (or refused) on this connection")
        try:
            parsed = self._receive(data)
        except ProxyHeaderError:
            self.done = True
            raise
        if parsed is not None:
            self.done = True
            self._buffer = bytearray()
        return parsed

    def _receive(self, data: bytes) -> Parsed | None:
        if not data:
            got = len(self._buffer)
            raise ProxyHeaderError(f"connection closed after {got} byte{'s' * (got != 1)}, before a complete "
                                   "PROXY header")
        self._buffer += data
        buffer = self._buffer
        if buffer[0] == V2_SIGNATURE[0]:
            return self._version_2(buffer)
        if buffer[0] == V1_PREFIX[0]:
            return self._version_1(buffer)
        raise ProxyHeaderError(f"no PROXY header: the connection starts with {bytes(buffer[:16])!r}")

    def _version_1(self, buffer: bytearray) -> Parsed | None:
        _check_prefix(buffer, V1_PREFIX, "PROXY v1")
        end = buffer.find(b"\r\n", 0, V1_MAX)
        scan_end = end
        if end < 0:
            # Everything seen so far must be text, except a CR as the very last byte: its LF may
            # be in the next chunk.
            scan_end = min(len(buffer), V1_MAX)
            if buffer[scan_end - 1] == 0x0D and scan_end < V1_MAX:
                scan_end -= 1
        bad = _V1_NOT_ALLOWED.search(buffer, 0, scan_end)
        if bad:
            raise ProxyHeaderError(f"PROXY v1 line holds {bytes(bad.group())!r} at byte {bad.start()} (only "
                                   "printable ASCII, ended by CRLF)")
        if end < 0:
            if len(buffer) >= V1_MAX:
                raise ProxyHeaderError(f"PROXY v1 line has no CRLF within {V1_MAX} bytes")
            return None
        header = parse_v1(bytes(buffer[:end + 2]))
        return Parsed(header, bytes(buffer[end + 2:]))

    def _version_2(self, buffer: bytearray) -> Parsed | None:
        _check_prefix(buffer, V2_SIGNATURE, "PROXY v2")
        if len(buffer) < V2_HEADER:
            return None
        # The fixed bytes are checked before waiting for the rest: a wrong version fails at once.
        _check_fixed_v2(buffer[12], buffer[13])
        length = struct.unpack_from("!H", buffer, 14)[0]
        if length > self.max_payload:
            raise ProxyHeaderError(f"PROXY v2 header announces {length} bytes of addresses and TLVs; "
                                   f"at most {self.max_payload} are accepted")
        if len(buffer) < V2_HEADER + length:
            return None
        end = V2_HEADER + length
        return Parsed(parse_v2(bytes(buffer[:end])), bytes(buffer[end:]))


def _check_prefix(buffer: bytearray, prefix: bytes, what: str) -> None:
    head = bytes(buffer[:len(prefix)])
    if not prefix.startswith(head):
        raise ProxyHeaderError(f"not a {what} header: it starts with {head!r}")


# --- version 1: one line of text ------------------------------------------------------------

#: Anything but printable ASCII before the CRLF, including a CR or LF on its own.
_V1_NOT_ALLOWED = re.compile(rb"[^\x20-\x7e]")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_IPV6_CHARACTERS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


def parse_v1(line: bytes) -> ProxyHeader:
    """A whole version 1 line, CRLF included."""
    if not line.startswith(V1_PREFIX) or not line.endswith(b"\r\n") or len(line) > V1_MAX:
        raise ProxyHeaderError("not a PROXY v1 line")
    text = line[len(V1_PREFIX):-2].decode("ascii")
    if text == "UNKNOWN" or text.startswith("UNKNOWN "):
        # "The receiver must ignore anything presented before the CRLF": use the real endpoints.
        return ProxyHeader(1, Command.PROXY, None, None, size=len(line))
    fields = text.split(" ")
    if len(fields) != 5:
        raise ProxyHeaderError(f"PROXY v1 line has {len(fields)} fields after PROXY, not 5 "
                               "(protocol, source, destination, source port, destination port; one space each)")
    protocol, source, destination, source_port, destination_port = fields
    if protocol == "TCP4":
        hosts = [_v1_ipv4(source, "source"), _v1_ipv4(destination, "destination")]
    elif protocol == "TCP6":
        hosts = [_v1_ipv6(source, "source"), _v1_ipv6(destination, "destination")]
    else:
        raise ProxyHeaderError(f"PROXY v1 protocol {protocol[:16]!r} is none of TCP4, TCP6, UNKNOWN")
    ports = [_v1_port(source_port, "source"), _v1_port(destination_port, "destination")]
    return ProxyHeader(1, Command.PROXY, Endpoint(hosts[0], ports[0]), Endpoint(hosts[1], ports[1]),
                       size=len(line))


def _v1_ipv4(text: str, which: str) -> str:
    if not _IPV4.fullmatch(text):
        raise ProxyHeaderError(f"PROXY v1 {which} {text[:45]!r} is not an IPv4 address in canonical form")
    return text


def _v1_ipv6(text: str, which: str) -> str:
    try:
        if not _IPV6_CHARACTERS.fullmatch(text):
            raise ValueError(text)
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 {which} {text[:45]!r} is not an IPv6 address") from None


def _v1_port(text: str, which: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY v1 {which} port {text[:16]!r} is not a number from 0 to 65535 "
                               "without leading zeros")
    return int(text)


# --- version 2: binary ----------------------------------------------------------------------

#: Family+protocol bytes the spec lists, and the size of the address block each needs:
#: UNSPEC, TCP and UDP over IPv4 and IPv6, UNIX stream and datagram.
_V2_ADDRESS_SIZES = {0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}
_TCP = {0x11: 4, 0x21: 16}


def _check_fixed_v2(version_command: int, family_protocol: int) -> None:
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header has version {version_command >> 4}, not 2")
    if version_command & 0x0F not in (Command.LOCAL.value, Command.PROXY.value):
        raise ProxyHeaderError(f"PROXY v2 command {version_command & 0x0F} is neither LOCAL (0) nor PROXY (1)")
    if family_protocol not in _V2_ADDRESS_SIZES:
        raise ProxyHeaderError(f"PROXY v2 family/protocol byte 0x{family_protocol:02x} is not one the spec "
                               "defines (0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32)")


def parse_v2(block: bytes) -> ProxyHeader:
    """A whole version 2 header: the 16 fixed bytes and exactly the payload they announce."""
    if len(block) < V2_HEADER or not block.startswith(V2_SIGNATURE):
        raise ProxyHeaderError("not a PROXY v2 header")
    version_command, family_protocol, length = struct.unpack_from("!BBH", block, 12)
    _check_fixed_v2(version_command, family_protocol)
    if len(block) != V2_HEADER + length:
        raise ProxyHeaderError(f"PROXY v2 header announces {length} bytes after the fixed 16, "
                               f"not {len(block) - V2_HEADER}")
    command = Command(version_command & 0x0F)
    if command is Command.LOCAL:
        # "Discard the protocol block including the family": the balancer speaks for itself.
        return ProxyHeader(2, command, None, None, size=len(block))
    need = _V2_ADDRESS_SIZES[family_protocol]
    if length < need:
        raise ProxyHeaderError(f"PROXY v2 addresses for family/protocol 0x{family_protocol:02x} need {need} "
                               f"bytes; the header has {length}")
    source = destination = None
    if family_protocol in _TCP:
        width = _TCP[family_protocol]
        kind = ipaddress.IPv4Address if width == 4 else ipaddress.IPv6Address
        start = V2_HEADER
        source_port, destination_port = struct.unpack_from("!HH", block, start + 2 * width)
        source = Endpoint(kind(block[start:start + width]).compressed, source_port)
        destination = Endpoint(kind(block[start + width:start + 2 * width]).compressed, destination_port)
    tlvs = _parse_tlvs(block, V2_HEADER + need)
    return ProxyHeader(2, command, source, destination, tlvs, size=len(block))


def _parse_tlvs(block: bytes, start: int) -> tuple[tuple[int, bytes], ...]:
    tlvs = []
    at = start
    while at < len(block):
        if len(block) - at < 3:
            raise ProxyHeaderError(f"PROXY v2 TLV at byte {at} is cut short ({len(block) - at} of 3 bytes)")
        kind, length = struct.unpack_from("!BH", block, at)
        value = block[at + 3:at + 3 + length]
        if len(value) != length:
            raise ProxyHeaderError(f"PROXY v2 TLV 0x{kind:02x} at byte {at} announces {length} bytes; "
                                   f"only {len(value)} remain in the header")
        if kind == PP2_TYPE_CRC32C:
            _check_crc(block, at + 3, value)
        elif kind == PP2_TYPE_UNIQUE_ID and length > UNIQUE_ID_MAX:
            raise ProxyHeaderError(f"PROXY v2 unique id of {length} bytes (at most {UNIQUE_ID_MAX})")
        tlvs.append((kind, value))
        at += 3 + length
    return tuple(tlvs)


def _check_crc(block: bytes, at: int, value: bytes) -> None:
    if len(value) != 4:
        raise ProxyHeaderError(f"PROXY v2 CRC32C TLV holds {len(value)} bytes, not 4")
    zeroed = block[:at] + b"\0\0\0\0" + block[at + 4:]
    if crc32c(zeroed) != struct.unpack("!I", value)[0]:
        raise ProxyHeaderError("PROXY v2 CRC32C does not match the header")


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B), as the PP2_TYPE_CRC32C TLV carries it."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- writing: what a sender (sockkit proxy --send-proxy) puts on the wire --------------------


def _same_family(source: Endpoint, destination: Endpoint) -> tuple[Endpoint, Endpoint, int]:
    """Both endpoints as one family (4 or 6): an IPv4 one beside an IPv6 one becomes ::ffff:a.b.c.d."""
    addresses = [ipaddress.ip_address(source.host), ipaddress.ip_address(destination.host)]
    if addresses[0].version != addresses[1].version:
        addresses = [ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a for a in addresses]
    return (Endpoint(addresses[0].compressed, source.port), Endpoint(addresses[1].compressed, destination.port),
            addresses[0].version)


def format_v1(source: Endpoint, destination: Endpoint) -> bytes:
    """``PROXY TCP4 src dst sport dport\\r\\n`` (TCP6 for IPv6)."""
    source, destination, version = _same_family(source, destination)
    return (f"PROXY TCP{version} {source.host} {destination.host} {source.port} {destination.port}\r\n"
            .encode("ascii"))


def format_v2(source: Endpoint | None, destination: Endpoint | None = None, *,
              tlvs: tuple[tuple[int, bytes], ...] = (), crc: bool = False) -> bytes:
    """A version 2 header: PROXY with TCP addresses, or LOCAL when ``source`` is None.
    ``crc`` appends a PP2_TYPE_CRC32C TLV computed over the whole header."""
    if source is None:
        command, family_protocol, addresses = Command.LOCAL, 0x00, b""
    else:
        if destination is None:
            raise ValueError("a PROXY v2 header with a source needs a destination too")
        source, destination, version = _same_family(source, destination)
        family_protocol = 0x11 if version == 4 else 0x21
        addresses = (ipaddress.ip_address(source.host).packed + ipaddress.ip_address(destination.host).packed
                     + struct.pack("!HH", source.port, destination.port))
        command = Command.PROXY
    payload = addresses + b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    if crc:
        payload += struct.pack("!BH", PP2_TYPE_CRC32C, 4) + b"\0\0\0\0"
    header = V2_SIGNATURE + struct.pack("!BBH", 0x20 | command.value, family_protocol, len(payload)) + payload
    if crc:
        header = header[:-4] + struct.pack("!I", crc32c(header))
    return header
