"""``sockkit bench models``: placeholder until the shoot-out lands."""

from __future__ import annotations


def register(subparsers) -> None:
    subparsers.add_parser("bench", help="benchmarks (work in progress)")
