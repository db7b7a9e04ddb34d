"""The sockkit side of ``make bench-getfile``'s concurrent case: N clients fetching one file at once.

Run by ``benchmarks/getfile.py`` as its own process (one, like ``curl -Z``). Kept apart from the
harness so that its interpreter start-up is only what a client needs: importing the harness
(subprocess, statistics, tempfile, ...) cost it ~0.05 s of a ~0.4 s measurement.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from collections.abc import Callable

HOST = "127.0.0.1"
CLIENT_TIMEOUT = 300.0


def load_main(argv: list[str]) -> int:
    """``--clients`` connections at once, each one GET1 of the same file; exit 1 if any failed.

    ``--mode threads``: one ``download()`` per thread (the library, to /dev/null). ``--mode
    events`` (default): one thread multiplexing every connection with a selector, as ``curl -Z``
    does for the HTTP peers; it checks size and xxh3-128 digest like download() does. Threads
    were GIL-bound here (client CPU ~0.8 s per GiB against curl's 0.47): that measured the
    client, and this case is about the server.
    """
    parser = argparse.ArgumentParser(prog="getfile_load.py")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--remote", required=True)
    parser.add_argument("--mode", choices=("events", "threads"), default="events")
    parser.add_argument("--threads", type=int, default=1, help="events mode: selector loops, one per thread")
    parser.add_argument("--http-digest", metavar="xxh3-128:HEX",
                        help="events mode: fetch over HTTP/1.1 (an HTTP server) and expect this digest")
    args = parser.parse_args(argv)
    if args.mode == "threads":
        return load_threads(args.port, args.clients, args.remote)
    return load_events(args.port, args.clients, args.remote, max(1, min(args.threads, args.clients)), args.http_digest)


def load_threads(port: int, clients: int, remote: str) -> int:
    from sockkit.clients.getfile import download

    errors: list[str] = []
    barrier = threading.Barrier(clients)

    def one() -> None:
        try:
            barrier.wait(30)
            download(remote, host=HOST, port=port, dest="/dev/null", timeout=60)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT)
    if errors:
        print(f"{len(errors)} of {clients} failed: {errors[0]}", file=sys.stderr)
        return 1
    return 0


def load_events(port: int, clients: int, remote: str, threads: int = 1, http_digest: str | None = None) -> int:
    """Every connection opened and asked at once, then received by ``threads`` selector loops,
    each owning a share of the connections. ``http_digest``: ask over HTTP/1.1 instead (the same
    client against an HTTP server) and check each body against this digest."""
    from sockkit.protocols import getfile as wire

    if http_digest is None:
        request = wire.format_request(wire.Get(remote))
        head_end = b"\n"

        def parse_head(head: bytes) -> tuple[int, str]:
            header = wire.parse_header(wire.parse_answer(head))
            return header.remaining, header.digest
    else:
        request = (f"GET /{remote} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n").encode()
        head_end = b"\r\n\r\n"

        def parse_head(head: bytes) -> tuple[int, str]:
            status, *fields = head.decode("latin-1").split("\r\n")
            if status.split(" ", 2)[1:2] != ["200"]:
                raise ValueError(f"HTTP answer {status!r}")
            lengths = [f.split(":", 1)[1] for f in fields if f.lower().startswith("content-length:")]
            if not lengths:
                raise ValueError("no Content-Length")
            return int(lengths[0]), http_digest

    socks = []
    for _ in range(clients):
        sock = socket.create_connection((HOST, port), timeout=30)
        sock.sendall(request)
        sock.setblocking(False)
        socks.append(sock)
    failures: list[int] = []
    shares = [socks[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=lambda share=share: failures.append(receive_all(share, head_end, parse_head)))
               for share in shares[1:]]
    for worker in workers:
        worker.start()
    failures.append(receive_all(shares[0], head_end, parse_head))
    for worker in workers:
        worker.join(CLIENT_TIMEOUT)
    failed = sum(failures) + (threads - len(failures))
    if failed:
        print(f"{failed} of {clients} failed", file=sys.stderr)
        return 1
    return 0


def receive_all(socks: list[socket.socket], head_end: bytes, parse_head: Callable[[bytes], tuple[int, str]]) -> int:
    """Receive and verify every answer on ``socks`` (non-blocking): the head up to ``head_end``
    gives (body length, expected digest); the number of answers that failed."""
    import selectors

    import xxhash

    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    selector = selectors.DefaultSelector()
    state: dict[socket.socket, dict] = {}
    for sock in socks:
        state[sock] = {"head": b"", "left": -1, "hash": xxhash.xxh3_128(), "digest": ""}
        selector.register(sock, selectors.EVENT_READ)
    failed = 0
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while state and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=5):
            sock = key.fileobj
            info = state[sock]
            try:
                if info["left"] < 0:
                    got = sock.recv(65536)
                    if not got:
                        raise ConnectionError("closed before the header")
                    info["head"] += got
                    if head_end not in info["head"]:
                        continue
                    head, rest = info["head"].split(head_end, 1)
                    size, info["digest"] = parse_head(head)
                    info["left"] = size - len(rest)
                    info["hash"].update(rest)
                else:
                    got = sock.recv_into(view, min(info["left"], len(view)))
                    if not got:
                        raise ConnectionError("closed mid-body")
                    info["hash"].update(view[:got])
                    info["left"] -= got
                if info["left"] == 0:
                    if f"xxh3-128:{info['hash'].hexdigest()}" != info["digest"]:
                        raise ValueError("digest mismatch")
                    selector.unregister(sock)
                    sock.close()
                    del state[sock]
            except BlockingIOError:
                continue
            except (OSError, ValueError) as exc:
                print(f"load: {exc}", file=sys.stderr)
                failed += 1
                selector.unregister(sock)
                sock.close()
                del state[sock]
    for sock in state:
        sock.close()
    selector.close()
    return failed + len(state)


if __name__ == "__main__":
    sys.exit(load_main(sys.argv[1:]))
