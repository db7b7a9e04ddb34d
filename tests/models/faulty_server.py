"""``python tests/models/faulty_server.py [serve options]``: ``sockkit serve`` running a service with a bug.

The service answers each line like the echo service (``Echo=>`` + the line), except that a line
reading ``boom`` makes its ``receive`` raise -- a service bug, which must end that one connection,
be logged once with the client's name, and leave every other client served, under every model.
It is registered for this process only, and run through sockkit's own command line.
"""

from __future__ import annotations

import sys

from sockkit import catalog, cli
from sockkit.catalog import ServiceSpec
from sockkit.services.actions import CLOSE, Peer, Reply
from sockkit.services.lines import LineBuffer


class ServiceBug(RuntimeError):
    """What the faulty service raises."""


class FaultyConnection:
    def __init__(self) -> None:
        self.lines = LineBuffer(1 << 16)

    def start(self) -> list:
        return []

    def receive(self, data: bytes) -> Reply:
        if not data:
            return [CLOSE]
        replies = []
        for line in self.lines.feed(data):
            if line == b"boom":
                raise ServiceBug("the service broke on purpose")
            replies.append(b"Echo=>" + line + b"\n")
        return b"".join(replies) if replies else []

    def close(self) -> None:
        pass


class FaultyService:
    name = "faulty"

    def connect(self, peer: Peer) -> FaultyConnection:
        return FaultyConnection()

    def busy_reply(self) -> bytes:
        return b"Echo=>server busy, try again later\n"


SPEC = ServiceSpec(name="faulty", help="echo lines; 'boom' raises inside the service", default_port=0,
                   add_arguments=lambda parser: None, build=lambda args: FaultyService())

if __name__ == "__main__":
    catalog.SERVICES["faulty"] = "__main__:SPEC"
    sys.exit(cli.main(["serve", "faulty", *sys.argv[1:]]))
