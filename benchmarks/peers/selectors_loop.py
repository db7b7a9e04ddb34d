"""Bare selectors raw echo: one loop, non-blocking sockets, unsent bytes kept and sent when writable.
No sockkit code."""

import argparse
import selectors
import socket


def serve(host: str, port: int) -> None:
    sel = selectors.DefaultSelector()
    listener = socket.create_server((host, port), backlog=1024)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    print(f"listening on {host}:{listener.getsockname()[1]}", flush=True)
    pending: dict[socket.socket, bytes] = {}
    while True:
        for key, events in sel.select():
            sock = key.fileobj
            if sock is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ, None)
                continue
            try:
                if events & selectors.EVENT_WRITE:
                    data = pending.pop(sock)
                    sent = sock.send(data)
                    if sent < len(data):
                        pending[sock] = data[sent:]
                    else:
                        sel.modify(sock, selectors.EVENT_READ)
                    continue
                data = sock.recv(65536)
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    continue
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    pending[sock] = data[sent:]
                    sel.modify(sock, selectors.EVENT_WRITE)  # stop reading until the echo is out
            except OSError:
                pending.pop(sock, None)
                sel.unregister(sock)
                sock.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(args.host, args.port)
