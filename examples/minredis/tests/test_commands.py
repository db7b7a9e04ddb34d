"""MiniRedis without sockets: the protocol reader fed every way TCP may cut the bytes, and the
commands as pure functions of a dict."""

from __future__ import annotations

import re

import pytest

from minredis.commands import run
from minredis.resp import MAX_BULK, CommandReader, ProtocolError
from minredis.service import MiniRedis

PIPELINE = (b"*3\r\n$3\r\nSET\r\n$4\r\nspam\r\n$4\r\neggs\r\n"
            b"PING\r\n"
            b"*2\r\n$3\r\nGET\r\n$4\r\nspam\r\n"
            b"*2\r\n$4\r\nECHO\r\n$6\r\na\r\nb\x00c\r\n")
COMMANDS = [[b"SET", b"spam", b"eggs"], [b"PING"], [b"GET", b"spam"], [b"ECHO", b"a\r\nb\x00c"]]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096])
def test_reader_gets_the_same_commands_however_the_bytes_are_cut(size):
    reader = CommandReader()
    found = []
    for start in range(0, len(PIPELINE), size):
        found += reader.feed(PIPELINE[start:start + size])
    assert found == COMMANDS and reader.pending == b""


def test_reader_split_at_every_position():
    for cut in range(len(PIPELINE) + 1):
        reader = CommandReader()
        assert reader.feed(PIPELINE[:cut]) + reader.feed(PIPELINE[cut:]) == COMMANDS


@pytest.mark.parametrize(("data", "message"), [
    (b"*x\r\n", "invalid multibulk length"),
    (b"*1\r\n$-5\r\n", "invalid bulk length"),
    (b"*1\r\n$%d\r\n" % (MAX_BULK + 1), "invalid bulk length"),
    (b"*1\r\n:12\r\n", "expected '$', got ':'"),
    (b"*1\r\n$2\r\nabcd\r\n", "bulk string not followed by CRLF"),
    (b"x" * (64 * 1024 + 1), "too big inline request"),
])
def test_reader_refuses_broken_input(data, message):
    with pytest.raises(ProtocolError, match=re.escape(message)):
        CommandReader().feed(data)


def test_a_large_announced_value_is_waited_for_within_the_bound():
    reader = CommandReader()
    assert reader.feed(b"*2\r\n$4\r\nECHO\r\n$1000000\r\n" + b"v" * 999_999) == []
    assert reader.feed(b"v\r\n") == [[b"ECHO", b"v" * 1_000_000]]


@pytest.mark.parametrize(("command", "reply"), [
    ([b"PING"], b"+PONG\r\n"),
    ([b"ping", b"hi"], b"$2\r\nhi\r\n"),
    ([b"GET", b"nothing"], b"$-1\r\n"),
    ([b"SET", b"k", b"v", b"XX"], b"$-1\r\n"),
    ([b"SET", b"k", b"v", b"NX"], b"+OK\r\n"),
    ([b"SET", b"k", b"v", b"EX", b"10"], b"-ERR syntax error\r\n"),
    ([b"INCRBY", b"n", b"x"], b"-ERR value is not an integer or out of range\r\n"),
    ([b"INCRBY", b"n", b"9223372036854775807"], b":9223372036854775807\r\n"),
    ([b"MSET", b"a", b"1", b"b"], b"-ERR wrong number of arguments for 'mset' command\r\n"),
    ([b"GET"], b"-ERR wrong number of arguments for 'get' command\r\n"),
    ([b"HSET", b"h", b"f"], b"-ERR unknown command 'HSET', with args beginning with: 'h' 'f'\r\n"),
    ([b"CONFIG", b"GET", b"save"], b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
])
def test_commands(command, reply):
    assert run({}, command) == reply


def test_counters_and_keys():
    store: dict[bytes, bytes] = {}
    assert [run(store, command) for command in (
        [b"INCR", b"n"], [b"INCRBY", b"n", b"41"], [b"DECR", b"n"], [b"DECRBY", b"n", b"-2"],
        [b"MSET", b"a", b"1", b"b", b"2"], [b"MGET", b"a", b"zz", b"b"], [b"EXISTS", b"a", b"b", b"zz"],
        [b"DEL", b"a", b"zz"], [b"DBSIZE"], [b"INCRBY", b"n", b"9223372036854775807"], [b"FLUSHDB"], [b"DBSIZE"],
    )] == [b":1\r\n", b":42\r\n", b":41\r\n", b":43\r\n",
           b"+OK\r\n", b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n", b":2\r\n",
           b":1\r\n", b":2\r\n", b"-ERR increment or decrement would overflow\r\n", b"+OK\r\n", b":0\r\n"]


def test_a_connection_answers_a_pipeline_in_one_reply_and_quits():
    connection = MiniRedis().connect(None)
    assert connection.receive(PIPELINE[:10]) == []
    assert connection.pending_request()
    assert connection.receive(PIPELINE[10:]) == b"+OK\r\n+PONG\r\n$4\r\neggs\r\n$6\r\na\r\nb\x00c\r\n"
    assert not connection.pending_request()
    actions = connection.receive(b"PING\r\nQUIT\r\nPING\r\n")
    assert [type(action).__name__ for action in actions] == ["Send", "Close"]
    assert actions[0].data == b"+PONG\r\n+OK\r\n"


def test_a_protocol_error_is_said_then_the_connection_closes():
    actions = MiniRedis().connect(None).receive(b"*1\r\n$x\r\n")
    assert actions[0].data == b"-ERR Protocol error: invalid bulk length\r\n"
    assert type(actions[1]).__name__ == "Close"
