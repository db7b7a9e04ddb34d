"""MiniRedis: a subset of Redis on sockkit, the example of docs/writing-a-service.md."""

from minredis.service import MiniRedis

__all__ = ["MiniRedis"]
