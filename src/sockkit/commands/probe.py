"""``sockkit probe HOST PORT [--send TEXT]``: a raw client for any port."""

from __future__ import annotations

import sys

from sockkit.clients.connect import ConnectFailed
from sockkit.clients.probe import decode_escapes, probe, render
from sockkit.ports import connect_port


def register(subparsers) -> None:
    parser = subparsers.add_parser("probe", help="talk to any port: show its banner, send a line, show the reply",
                                   description="Connect to HOST PORT, print what the server says first, "
                                               "optionally send a line and print the reply (hex if binary).")
    parser.add_argument("host")
    parser.add_argument("port", type=connect_port)
    parser.add_argument("--send", metavar="TEXT",
                        help="line to send; backslash escapes work ('GET /\\r\\n'); CRLF added if no newline")
    parser.add_argument("--bytes", type=int, default=65536, metavar="N",
                        help="read at most N bytes (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="connect and reply timeout in seconds (default %(default)s)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    send = None
    if args.send is not None:
        send = decode_escapes(args.send)
        if not send.endswith(b"\n"):
            send += b"\r\n"
    try:
        result = probe(args.host, args.port, send, args.bytes, args.timeout)
    except ConnectFailed as exc:
        print(f"sockkit probe: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sockkit probe: {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"connected to {args.host}:{args.port}")
    print(render(result.banner) if result.banner else "(no banner)")
    if send is not None:
        print(f"sent {len(send)} bytes")
        print(render(result.reply) if result.reply else "(no reply)")
    if result.closed:
        print("(server closed the connection)")
    return 0
