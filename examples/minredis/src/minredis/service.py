"""MiniRedis: the service. One store shared by every client; each connection turns the bytes it
receives into commands and answers them all at once.

Rule: one command runs at a time, whatever the model (Redis's own rule), so INCR from two clients
never loses a count: the thread models call ``receive`` of different clients at the same time.
"""

from __future__ import annotations

import threading

from sockkit import CLOSE, Needs, Peer, Reply, Send

from minredis.commands import run
from minredis.resp import OK, CommandReader, ProtocolError, error


class MiniRedis:
    """a subset of Redis (RESP2): strings, counters and keys in one store shared by all clients"""

    name = "minredis"
    default_port = 6379
    #: The store is one dict for all clients: no model that splits them between processes.
    needs = Needs(shared_state=True)

    def __init__(self) -> None:
        self.store: dict[bytes, bytes] = {}
        self.lock = threading.Lock()

    def connect(self, peer: Peer) -> RedisConnection:
        return RedisConnection(self)

    def busy_reply(self) -> bytes:
        return error("max number of clients reached")

    def execute(self, commands: list[list[bytes]]) -> list[bytes]:
        """The replies to ``commands``, run one at a time."""
        with self.lock:
            return [run(self.store, command) for command in commands]


class RedisConnection:
    """One client: commands in, replies out, in order."""

    def __init__(self, service: MiniRedis) -> None:
        self.service = service
        self.reader = CommandReader()

    def start(self) -> Reply:
        return []

    def receive(self, data: bytes) -> Reply:
        if not data:
            return [CLOSE]
        try:
            commands = self.reader.feed(data)
        except ProtocolError as exc:
            return [Send(error(f"Protocol error: {exc}")), CLOSE]
        if not commands:
            return []
        quit_at = next((i for i, command in enumerate(commands) if command[0].lower() == b"quit"), None)
        if quit_at is not None:
            replies = self.service.execute(commands[:quit_at])
            return [Send(b"".join(replies) + OK), CLOSE]
        return b"".join(self.service.execute(commands))

    def pending_request(self) -> bool:
        """Part of a command is here and the rest is not (the server's request deadline runs)."""
        return bool(self.reader.pending)

    def close(self) -> None:
        pass
