"""Carry out a getfile connection's actions in memory, as a model would, for the sans-IO tests."""

from __future__ import annotations

import os

from sockkit.protocols.getfile import parse_answer, parse_header
from sockkit.services.actions import Close, Send, SendFile, Wait


class Wire:
    """What the client would have received, and whether the server closed."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.out = bytearray()
        self.closed = False

    def send(self, data: bytes) -> Wire:
        self.run(self.conn.receive(data))
        return self

    def run(self, actions: list) -> None:
        actions = list(actions)
        while actions:
            action = actions.pop(0)
            assert not self.closed, f"action {action!r} after Close"
            if isinstance(action, Send):
                self.out += action.data
            elif isinstance(action, SendFile):
                try:
                    self.out += os.pread(action.file.fileno(), action.count, action.offset)
                finally:
                    action.file.close()
            elif isinstance(action, Close):
                self.closed = True
            else:
                assert isinstance(action, Wait)
                if action.then is not None:  # the engine's rule: its reply goes ahead of what follows
                    reply = action.then()
                    actions[:0] = [Send(reply)] if isinstance(reply, bytes) else reply

    def take_line(self) -> bytes:
        end = self.out.index(b"\n")
        line = bytes(self.out[:end + 1])
        del self.out[:end + 1]
        return line

    def take(self, count: int) -> bytes:
        assert len(self.out) >= count
        data = bytes(self.out[:count])
        del self.out[:count]
        return data

    def take_file(self) -> tuple[object, bytes]:
        """A GET1 answer: (header, body)."""
        fields = parse_answer(self.take_line())
        assert isinstance(fields, list), fields
        header = parse_header(fields)
        return header, self.take(header.remaining)

    def take_error(self) -> tuple[str, str]:
        answer = parse_answer(self.take_line())
        assert not isinstance(answer, list), answer
        return answer.code.value, answer.message
