"""Bare socketserver.ThreadingTCPServer raw echo. No sockkit code.

``--one-cpu`` runs it on the CPU it starts on (``taskset -c N`` done by the process itself), the
deployment sockkit's thread models use by default: it shows how much of their lead is that alone.
"""

import argparse
import os
import socket
import socketserver


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := sock.recv(65536):
            sock.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--one-cpu", action="store_true")
    args = parser.parse_args()
    if args.one_cpu:
        with open("/proc/thread-self/stat", "rb") as stat:
            cpu = int(stat.read().rpartition(b")")[2].split()[36])
        os.sched_setaffinity(0, {cpu})
    with Server((args.host, args.port), Echo) as server:
        print(f"listening on {args.host}:{server.server_address[1]}", flush=True)
        server.serve_forever()
