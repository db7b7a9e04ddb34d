"""Services as a user writes them, with nothing but the public API. The tests copy this file
into a temporary directory outside the repository and run it from there."""

from __future__ import annotations

import argparse

from sockkit import CLOSE, Action, Needs, Peer, Reply, Send


class Shout:
    """Each chunk back in capitals."""

    def start(self) -> list[Action]:
        return []

    def receive(self, data: bytes) -> Reply:
        return data.upper() if data else [CLOSE]

    def close(self) -> None:
        pass


class ShoutService:
    """shout every chunk back in capitals"""

    name = "shout"

    def connect(self, peer: Peer) -> Shout:
        return Shout()

    def busy_reply(self) -> bytes:
        return b"BUSY\n"


class Visitors:
    """Greets each client with its number in the order they came: one count for all clients."""

    name = "visitors"
    needs = Needs(shared_state=True)

    def __init__(self, greeting: str = "you are visitor") -> None:
        self.greeting = greeting
        self.count = 0

    def connect(self, peer: Peer) -> Visit:
        self.count += 1
        return Visit(f"{self.greeting} {self.count}\n".encode())

    def busy_reply(self) -> bytes:
        return b"full\n"


class Visit:
    """Says the banner, then closes."""

    def __init__(self, banner: bytes) -> None:
        self.banner = banner

    def start(self) -> list[Action]:
        return [Send(self.banner), CLOSE]

    def receive(self, data: bytes) -> Reply:
        return [CLOSE]

    def close(self) -> None:
        pass


class Secret(ShoutService):
    """shouting, but only over TLS"""

    name = "secret"
    needs = Needs(tls=True)


def make_visitors(options: argparse.Namespace) -> Visitors:
    """visitors, with a greeting of your choice"""
    return Visitors(options.greeting)


def _greeting_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--greeting", default="you are visitor")


make_visitors.add_arguments = _greeting_option  # type: ignore[attr-defined]

shout = ShoutService()
visitors = Visitors()
secret = Secret()
