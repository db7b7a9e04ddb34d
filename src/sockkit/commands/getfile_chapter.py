"""The ``getfile`` console script: the chapter's Example 10-10 command line, on sockkit.

    getfile  -mode server            [-port nnn] [-host hhh|localhost]
    getfile [-mode client] -file fff [-port nnn] [-host hhh|localhost]

Arguments are read in pairs exactly as the chapter's ``parsecommandline`` does. The server is
``sockkit serve getfile`` sharing the current directory (loopback unless ``-host`` says otherwise:
the chapter's ``''`` exposed every file to the network). The client is ``sockkit.clients.getfile``:
the file lands in the current directory under its base name, verified, and the chapter's line
``Client got fff at <ctime>`` is printed. Fetching the same unchanged file again (as the chapter's
session does) succeeds without replacing it; a different local file of that name is not overwritten
unless ``--force`` is given (a flag, anywhere on the line: it is taken out before the pairs are read).
The chapter's names use Windows separators (``testdir\\python15.lib``): ``\\`` is read as ``/``, so the
request and the local base name are what the book's session got. A server that closes without a word
is the chapter's own: its protocol is spoken instead, and the copy is said to be unverified.
"""

from __future__ import annotations

import sys
import time

from sockkit.clients.getfile_legacy import UNVERIFIED_FALLBACK, download_or_legacy
from sockkit.errors import SockkitError, describe
from sockkit.ports import parse_port

HELP = """
Usage...
server=> getfile  -mode server            [-port nnn] [-host hhh|localhost]
client=> getfile [-mode client] -file fff [-port nnn] [-host hhh|localhost] [--force]
"""
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 50001


def parse_command_line(argv: list[str]) -> dict[str, str]:
    """``-name value`` pairs, as the chapter's parsecommandline (a lone trailing word is ignored)."""
    options = {}
    for index in range(0, len(argv) - 1, 2):
        options[argv[index]] = argv[index + 1]
    return options


def now() -> str:
    return time.ctime(time.time())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    force = "--force" in argv
    options = parse_command_line([arg for arg in argv if arg != "--force"])
    host = options.get("-host", DEFAULT_HOST)
    try:
        port = parse_port(options.get("-port", DEFAULT_PORT), listen=options.get("-mode") == "server")
    except ValueError as exc:
        print(f"getfile: -port: {exc}", file=sys.stderr)
        return 2
    if host == "localhost":
        host = "127.0.0.1"
    if options.get("-mode") == "server":
        from sockkit.cli import main as sockkit_main

        return sockkit_main(["serve", "getfile", "--host", host, "--port", str(port), "--root", "."])
    if options.get("-mode", "client") == "client" and options.get("-file"):
        return client(host, port, options["-file"], force=force)
    print(HELP)
    return 2


def client(host: str, port: int, filename: str, force: bool = False) -> int:
    try:
        result = download_or_legacy(filename.replace("\\", "/"), host=host, port=port, dest=".", force=force)
        if not result.verified:
            print(f"getfile: {UNVERIFIED_FALLBACK}", file=sys.stderr)
    except (SockkitError, OSError) as exc:
        print(f"getfile: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"getfile: {describe(exc)}", file=sys.stderr)
        return 130
    print("Client got", filename, "at", now())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
