"""Coverage-guided fuzzing of the getfile connection with atheris, bounded in time.

The fuzzer's bytes are cut into chunks (as TCP might deliver them) and fed to a sans-IO getfile
connection over a small served tree with a secret next to it. Every run must: raise nothing, never
produce a byte of the secret, only ever answer with well-formed OK1/ERR1 lines or file bodies,
and close what it opened. Run: ``python -m reliability.fuzz_getfile SECONDS WORKDIR`` (the tree and
any crash artifact go under WORKDIR, which the caller removes: libFuzzer exits without unwinding).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

MARKER = b"FUZZ-SECRET-5d1e"


def build_tree(base: Path) -> Path:
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 8)
    (base / "secret").write_bytes(MARKER)
    os.symlink(base / "secret", root / "out")
    os.symlink("../secret", root / "rel-out")
    os.symlink("sub/b.bin", root / "in")
    return base


def main() -> int:
    import atheris

    with atheris.instrument_imports():
        from sockkit.services.actions import Close, Peer, Send, SendFile, Wait
        from sockkit.services.getfile.root import ServedRoot
        from sockkit.services.getfile.service import GetfileService

    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    base = build_tree(Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="sockkit-fuzz-")))
    service = GetfileService(ServedRoot(str(base / "root")), allow_upload=True, log=lambda line: None)
    peer = Peer("127.0.0.1", 1)

    def check(actions: list) -> None:
        for action in actions:
            if isinstance(action, Send):
                assert MARKER not in action.data, "secret served"
            elif isinstance(action, SendFile):
                action.file.seek(action.offset)
                body = action.file.read(action.count)
                action.file.close()  # the driver owns it: close as a driver would
                assert MARKER not in body, "secret served"
            else:
                assert isinstance(action, Wait | Close), f"unknown action {action!r}"

    def one_input(data: bytes) -> None:
        provider = atheris.FuzzedDataProvider(data)
        conn = service.connect(peer)
        try:
            check(conn.start())
            while provider.remaining_bytes():
                chunk = provider.ConsumeBytes(provider.ConsumeIntInRange(1, 512))
                check(conn.receive(chunk))
            check(conn.receive(b""))
        finally:
            conn.close()

    sys.argv = [sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=1024", "-print_final_stats=1",
                f"-artifact_prefix={base}/"]
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
