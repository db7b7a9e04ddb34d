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
    args = parser.parse_args(argv)
    if args.mode == "threads":
        return load_threads(args.port, args.clients, args.remote)
    return load_events(args.port, args.clients, args.remote)


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


def load_events(port: int, clients: int, remote: str) -> int:
    import selectors

    import xxhash

    from sockkit.protocols import getfile as wire

    request = wire.format_request(wire.Get(remote))
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    selector = selectors.DefaultSelector()
    state: dict[socket.socket, dict] = {}
    for _ in range(clients):
        sock = socket.create_connection((HOST, port), timeout=30)
        sock.sendall(request)
        sock.setblocking(False)
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
                    if b"\n" not in info["head"]:
                        continue
                    line, rest = info["head"].split(b"\n", 1)
                    header = wire.parse_header(wire.parse_answer(line))
                    info["left"], info["digest"] = header.remaining - len(rest), header.digest
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
    if failed or state:
        print(f"{failed + len(state)} of {clients} failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(load_main(sys.argv[1:]))
