"""Coverage-guided fuzzing of the PROXY protocol reader with atheris, bounded in time.

Each input is fed twice: whole, and cut into chunks as TCP might deliver it. Every run must raise
nothing but ``ProxyHeaderError``, hold no more than one header's bound, give the same answer for
both feedings (TCP's splits never change what a header says, nor where the client's bytes begin),
and every header it accepts must be written back by ``format_v1``/``format_v2`` to bytes that read
the same. Random bytes rarely get past a header's first field, so two inputs in three are a valid
v1 or v2 header built from fuzzed addresses, ports and TLVs, then damaged at fuzzed places; and
libFuzzer gets a dictionary of the protocol's tokens (a mutation that broke the reader's CR/LF
handling took it under 20 s to find). Run: ``python -m reliability.fuzz_proxy_header SECONDS
WORKDIR`` (the dictionary and any crash artifact go under WORKDIR, which the caller removes).
"""

from __future__ import annotations

import ipaddress
import sys
import tempfile
from pathlib import Path

TOKENS = [b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"\r\n", b" ", b"255.255.255.255", b"0.0.0.0", b"::",
          b"::ffff:", b"ffff:", b"65535", b"\r\n\r\n\x00\r\nQUIT\n", b"\x21\x11\x00\x0c", b"\x21\x21\x00\x24",
          b"\x20\x00\x00\x00", b"\x21\x31\x00\xd8", b"\x03\x00\x04", b"\x04\x00\x00", b"\x05\x00\x80"]


def write_dictionary(path: Path) -> None:
    """libFuzzer's dictionary format: one quoted token a line, every byte as \\xNN."""
    lines = ['"' + "".join(f"\\x{byte:02x}" for byte in token) + '"' for token in TOKENS]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    import atheris

    with atheris.instrument_imports():
        from sockkit.protocols.proxy_header import (
            DEFAULT_MAX_PAYLOAD,
            V1_MAX,
            V2_HEADER,
            Command,
            Endpoint,
            HeaderReader,
            ProxyHeaderError,
            format_v1,
            format_v2,
        )

    bound = max(V1_MAX, V2_HEADER + DEFAULT_MAX_PAYLOAD)

    def outcome(chunks: list[bytes]):
        reader = HeaderReader()
        fed = 0
        for chunk in chunks:
            before = len(reader._buffer)
            try:
                parsed = reader.receive(chunk)
            except ProxyHeaderError:
                return "refused"
            assert before < bound, f"held {before} bytes before a chunk (bound {bound})"
            fed += len(chunk)
            if parsed is not None:
                return parsed.header, fed - len(parsed.rest)
        return "incomplete"

    def rewritten(header):
        if header.command is Command.LOCAL:
            return format_v2(None)
        if header.version == 1:
            return format_v1(header.source, header.destination)
        return format_v2(header.source, header.destination, tlvs=header.tlvs)

    def endpoint(provider, six: bool) -> Endpoint:
        if six:
            host = str(ipaddress.IPv6Address(provider.ConsumeBytes(16).ljust(16, b"\0")))
        else:
            host = str(ipaddress.IPv4Address(provider.ConsumeBytes(4).ljust(4, b"\0")))
        return Endpoint(host, provider.ConsumeIntInRange(0, 65535))

    def built(provider) -> bytes:
        """A valid header from fuzzed fields, then up to four bytes damaged."""
        six = provider.ConsumeBool()
        source, destination = endpoint(provider, six), endpoint(provider, six)
        if provider.ConsumeBool():
            wire = bytearray(format_v1(source, destination))
        else:
            tlvs = tuple((provider.ConsumeIntInRange(0, 255), provider.ConsumeBytes(provider.ConsumeIntInRange(0, 40)))
                         for _ in range(provider.ConsumeIntInRange(0, 3)))
            tlvs = tuple((kind, value) for kind, value in tlvs if kind not in (0x03, 0x05))
            wire = bytearray(format_v2(source, destination, tlvs=tlvs, crc=provider.ConsumeBool()))
        for _ in range(provider.ConsumeIntInRange(0, 4)):
            wire[provider.ConsumeIntInRange(0, len(wire) - 1)] = provider.ConsumeIntInRange(0, 255)
        return bytes(wire)

    def one_input(data: bytes) -> None:
        provider = atheris.FuzzedDataProvider(data)
        cuts = [provider.ConsumeIntInRange(1, 64) for _ in range(provider.ConsumeIntInRange(0, 8))]
        body = built(provider) if provider.ConsumeIntInRange(0, 2) else b""
        body += provider.ConsumeBytes(provider.remaining_bytes())
        chunks, at = [], 0
        for size in cuts:
            if at < len(body):
                chunks.append(body[at:at + size])
                at += size
        if at < len(body):
            chunks.append(body[at:])
        whole = outcome([body] if body else [])
        assert outcome(chunks) == whole, "the answer depends on how the bytes were split"
        if isinstance(whole, tuple) and whole[0].source is not None:
            header = whole[0]
            again = HeaderReader().receive(rewritten(header))
            assert again is not None and again.header.source == header.source, "written back differently"
            assert again.header.destination == header.destination

    base = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="sockkit-fuzz-proxy-"))
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    dictionary = base / "proxy.dict"
    write_dictionary(dictionary)
    sys.argv = [sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=1024", "-print_final_stats=1",
                f"-dict={dictionary}", f"-artifact_prefix={base}/"]
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
