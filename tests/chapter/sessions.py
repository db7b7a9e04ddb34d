"""The chapter's sessions as the book prints them: command lines and output lines, shared by the tests
of the chapter's programs against sockkit and of sockkit's programs against the chapter's.

Lines are the book's own (Python 2's ``repr``); ``peers.py3`` turns them into what the Python 3 ports
print, ``peers.stamp_pattern`` lets their `` at <ctime>`` stamps be any server time.
"""

from __future__ import annotations

import os
from pathlib import Path

#: 10.3.1.3 and 10.3.1.4, as the book prints them: echo-client.py's arguments, then its output.
ECHO_SESSIONS = [
    ([], ["Client received: 'Echo=>Hello network world'"]),
    (["localhost", "spam", "Spam", "SPAM"],
     ["Client received: 'Echo=>spam'", "Client received: 'Echo=>Spam'", "Client received: 'Echo=>SPAM'"]),
    (["localhost", "Shrubbery"], ["Client received: 'Echo=>Shrubbery'"]),
    (["localhost", "ni", "Ni", "NI"],
     ["Client received: 'Echo=>ni'", "Client received: 'Echo=>Ni'", "Client received: 'Echo=>NI'"]),
    (["127.0.0.1", "Does", "she?"], ["Client received: 'Echo=>Does'", "Client received: 'Echo=>she?'"]),
]
#: 10.4.1.1, three client windows against the forking server (sleep 5, stamped replies).
DELAYED_SESSION = [
    ([], ["Client received: 'Echo=>Hello network world at Sun Jun 18 19:37:54 2000'"]),
    (["localhost", "Bruce"], ["Client received: 'Echo=>Bruce at Sun Jun 18 19:37:54 2000'"]),
    (["localhost", "The", "Meaning", "of", "Life"],
     ["Client received: 'Echo=>The at Sun Jun 18 19:37:55 2000'",
      "Client received: 'Echo=>Meaning at Sun Jun 18 19:37:56 2000'",
      "Client received: 'Echo=>of at Sun Jun 18 19:37:56 2000'",
      "Client received: 'Echo=>Life at Sun Jun 18 19:37:56 2000'"]),
]
#: The chapter's servers' ``time.sleep(5)``; sockkit's ``--delay 5``.
DELAY = 5.0

#: 10.4.4.2, against the select server (two ports, stamped replies, no sleep).
SELECT_SESSION = [
    ("echo-client.py", [], ["Client received: 'Echo=>Hello network world at Sun Aug 13 22:52:01 2000'"]),
    ("echo-client.py", [], ["Client received: 'Echo=>Hello network world at Sun Aug 13 22:52:03 2000'"]),
    ("echo-client-50008.py", ["localhost", "Sir", "Lancelot"],
     ["Client received: 'Echo=>Sir at Sun Aug 13 22:52:57 2000'",
      "Client received: 'Echo=>Lancelot at Sun Aug 13 22:52:57 2000'"]),
]


#: 10.5.1: getfile.py's client against a server holding these files (its session's names).
FILES = {"testdir/python15.lib": os.urandom(300 * 1024), "testdir/textfile": b"spam\nSpam\nSPAM\n" * 100,
         "python15.lib": os.urandom(200 * 1024 + 1), "textfile": b"a text file\n", "index.html": b"<html></html>\n"}


def shared_folder(root: Path) -> None:
    """The files of FILES under ``root``: the directory a getfile server shares."""
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
