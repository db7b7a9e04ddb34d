"""``sockkit echo [HOST[:PORT]] [MESSAGE ...]``: the chapter's echo client."""

from __future__ import annotations

import sys

from sockkit.clients.connect import ConnectFailed
from sockkit.clients.echo import ReplyError, exchange
from sockkit.net import split_host_port
from sockkit.ports import connect_port
from sockkit.services.echo import BUSY, DEFAULT_PORT

DEFAULT_MESSAGE = "Hello network world"
#: The reply of a sockkit echo server past its --max-connections (a line's without its newline).
BUSY_TEXT = BUSY.decode().rstrip("\n")
#: Why the chapter's way may get no answer: the message carries no newline.
LINES_HINT = "a server started with --lines answers whole lines only: use sockkit echo --lines"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "echo", help="send messages to an echo server, print each reply",
        description="The chapter's echo client: one message per argument, sent as the chapter's client "
                    "sends it (no newline); works against `sockkit serve echo` and the chapter's own servers.")
    parser.add_argument("server", nargs="?", default="localhost", metavar="HOST[:PORT]",
                        help=f"server (default localhost:{DEFAULT_PORT}; [::1]:PORT for IPv6)")
    parser.add_argument("messages", nargs="*", metavar="MESSAGE", help=f"default: {DEFAULT_MESSAGE!r}")
    parser.add_argument("--port", type=connect_port, default=None, help="port, if not given as HOST:PORT")
    framing = parser.add_mutually_exclusive_group()
    framing.add_argument("--lines", action="store_true",
                         help="send each message as a line, read one line back (serve echo --lines)")
    framing.add_argument("--raw", action="store_true", help="the server echoes raw bytes (serve echo --raw)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up on a silent server after this long (default %(default)s)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    try:
        host, port = split_host_port(args.server, args.port or DEFAULT_PORT)
    except ValueError as exc:  # HOST:PORT with a port out of range: a usage error
        print(f"sockkit echo: {exc}", file=sys.stderr)
        return 2
    messages = args.messages or [DEFAULT_MESSAGE]

    def hint(waited: float) -> None:
        print(f"sockkit echo: no reply from {host}:{port} after {waited:.0f} s, still waiting (up to "
              f"{args.timeout:g} s); {LINES_HINT}", file=sys.stderr, flush=True)

    try:
        for reply in exchange(host, port, messages, raw=args.raw, lines=args.lines, timeout=args.timeout,
                              on_silence=hint):
            print("Client received:", repr(reply), flush=True)
            if reply.rstrip("\n") == BUSY_TEXT:
                print(f"sockkit echo: {host}:{port}: the server is busy (past its --max-connections); try again "
                      "later", file=sys.stderr)
                return 1
    except ConnectFailed as exc:
        print(f"sockkit echo: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        why = "" if args.lines or args.raw else f" ({LINES_HINT})"
        print(f"sockkit echo: {host}:{port}: no reply within {args.timeout:g} s{why}", file=sys.stderr)
        return 1
    except (ReplyError, OSError, ValueError) as exc:
        print(f"sockkit echo: {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0
