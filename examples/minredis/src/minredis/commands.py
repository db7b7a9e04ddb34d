"""The commands MiniRedis knows: each a function of the store and the command's arguments,
returning its reply. Pure functions over a dict, so each is tested without a server.

Rule: a command checks its arguments before it changes anything, so an error changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from minredis.resp import NIL, OK, array, bulk, error, integer, simple

Store = dict[bytes, bytes]
Command = Callable[[Store, list[bytes]], bytes]

NOT_AN_INTEGER = error("value is not an integer or out of range")


def ping(store: Store, args: list[bytes]) -> bytes:
    return bulk(args[0]) if args else simple("PONG")


def echo(store: Store, args: list[bytes]) -> bytes:
    return bulk(args[0])


def get(store: Store, args: list[bytes]) -> bytes:
    return bulk(store.get(args[0]))


def set_(store: Store, args: list[bytes]) -> bytes:
    """SET key value [NX | XX]: NX only if the key is absent, XX only if it is present."""
    key, value, *options = args
    condition = options[0].upper() if options else None
    if len(options) > 1 or condition not in (None, b"NX", b"XX"):
        return error("syntax error")
    if condition and (key in store) == (condition == b"NX"):
        return NIL
    store[key] = value
    return OK


def mget(store: Store, args: list[bytes]) -> bytes:
    return array([store.get(key) for key in args])


def mset(store: Store, args: list[bytes]) -> bytes:
    if len(args) % 2:
        return error("wrong number of arguments for 'mset' command")
    store.update(zip(args[::2], args[1::2], strict=True))
    return OK


def delete(store: Store, args: list[bytes]) -> bytes:
    return integer(sum(store.pop(key, None) is not None for key in args))


def exists(store: Store, args: list[bytes]) -> bytes:
    return integer(sum(key in store for key in args))


def add(store: Store, key: bytes, step: bytes | int) -> bytes:
    """INCR and friends: the value at ``key`` (0 if none) plus ``step``, both 64-bit integers."""
    try:
        total = int(store.get(key, b"0")) + int(step)
    except ValueError:
        return NOT_AN_INTEGER
    if not -(2**63) <= total < 2**63:
        return error("increment or decrement would overflow")
    store[key] = b"%d" % total
    return integer(total)


def incr(store: Store, args: list[bytes]) -> bytes:
    return add(store, args[0], 1)


def decr(store: Store, args: list[bytes]) -> bytes:
    return add(store, args[0], -1)


def incrby(store: Store, args: list[bytes]) -> bytes:
    return add(store, args[0], args[1])


def decrby(store: Store, args: list[bytes]) -> bytes:
    try:
        return add(store, args[0], -int(args[1]))
    except ValueError:
        return NOT_AN_INTEGER


def dbsize(store: Store, args: list[bytes]) -> bytes:
    return integer(len(store))


def flushdb(store: Store, args: list[bytes]) -> bytes:
    store.clear()
    return OK


#: What ``CONFIG GET`` reports: no persistence at all (redis-benchmark asks before it starts).
CONFIG = {b"save": b"", b"appendonly": b"no"}


def config(store: Store, args: list[bytes]) -> bytes:
    if args[0].upper() != b"GET" or len(args) != 2:
        return error("only CONFIG GET is supported")
    return array([item for name, value in CONFIG.items() if name == args[1].lower() for item in (name, value)])


def client(store: Store, args: list[bytes]) -> bytes:
    """CLIENT SETNAME/SETINFO (redis-py sends SETINFO on connecting): accepted and forgotten."""
    return OK if args[0].upper() in (b"SETNAME", b"SETINFO") else error("only CLIENT SETNAME/SETINFO are supported")


#: Name -> (function, arity as Redis counts it: the command included; -N means at least N).
COMMANDS: dict[bytes, tuple[Command, int]] = {
    b"ping": (ping, -1), b"echo": (echo, 2),
    b"get": (get, 2), b"set": (set_, -3), b"mget": (mget, -2), b"mset": (mset, -3),
    b"del": (delete, -2), b"exists": (exists, -2),
    b"incr": (incr, 2), b"decr": (decr, 2), b"incrby": (incrby, 3), b"decrby": (decrby, 3),
    b"dbsize": (dbsize, 1), b"flushdb": (flushdb, 1), b"flushall": (flushdb, 1),
    b"config": (config, -2), b"client": (client, -2),
}


def run(store: Store, command: list[bytes]) -> bytes:
    """The reply to one command, or Redis's error for an unknown one or a wrong argument count."""
    name = command[0].lower()
    known = COMMANDS.get(name)
    if known is None:
        shown = " ".join(f"'{arg.decode(errors='replace')}'" for arg in command[1:4])
        return error(f"unknown command '{command[0].decode(errors='replace')}', with args beginning with: {shown}")
    function, arity = known
    if len(command) != arity if arity > 0 else len(command) < -arity:
        return error(f"wrong number of arguments for '{name.decode()}' command")
    return function(store, command[1:])
