"""The ``getfile`` console script: the chapter's Example 10-10 command line, on sockkit.

    getfile  -mode server            [-port nnn] [-host hhh|localhost]
    getfile [-mode client] -file fff [-port nnn] [-host hhh|localhost]

Arguments are read in pairs exactly as the chapter's ``parsecommandline`` does. The server is
``sockkit serve getfile`` sharing the current directory (loopback unless ``-host`` says otherwise:
the chapter's ``''`` exposed every file to the network). The client is ``sockkit.clients.getfile``:
the file lands in the current directory under its base name, verified, and the chapter's line
``Client got fff at <ctime>`` is printed. Fetching the same unchanged file again (as the chapter's
session does) succeeds without replacing it; a different local file of that name is not overwritten.
"""

from __future__ import annotations

import sys
import time

from sockkit.clients.getfile import download
from sockkit.clients.getfile_legacy import legacy_download
from sockkit.errors import NoAnswer, SockkitError, describe

HELP = """
Usage...
server=> getfile  -mode server            [-port nnn] [-host hhh|localhost]
client=> getfile [-mode client] -file fff [-port nnn] [-host hhh|localhost]
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
    options = parse_command_line(sys.argv[1:] if argv is None else argv)
    host = options.get("-host", DEFAULT_HOST)
    try:
        port = int(options.get("-port", DEFAULT_PORT))
    except ValueError:
        print(f"getfile: -port must be a number, not {options['-port']!r}", file=sys.stderr)
        return 2
    if host == "localhost":
        host = "127.0.0.1"
    if options.get("-mode") == "server":
        from sockkit.cli import main as sockkit_main

        return sockkit_main(["serve", "getfile", "--host", host, "--port", str(port), "--root", "."])
    if options.get("-mode", "client") == "client" and options.get("-file"):
        return client(host, port, options["-file"])
    print(HELP)
    return 2


def client(host: str, port: int, filename: str) -> int:
    try:
        try:
            download(filename, host=host, port=port, dest=".")
        except NoAnswer:
            # Closed without a word: the chapter's own server (it took our request line for a file
            # name). Speak its protocol instead; it cannot be verified, so say so.
            legacy_download(filename, host=host, port=port, dest=".")
            print("getfile: the server speaks only the chapter's protocol; the copy is not verified",
                  file=sys.stderr)
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
