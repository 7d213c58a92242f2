"""`lightci trigger` through a running lightci of its home: the client end.

A serve, web, worker or scheduler process holds HOME/run/control.sock
(lightci.cli.control). `trigger` hands it the parsed arguments and prints
what comes back, so the CLI imports neither peewee nor the domain: Python,
argparse and this module. No process holding the socket, or a CLI with
settings of its own (LIGHTCI_* besides HOME and TOKEN): the CLI queues the
build itself, as it always could.

The wire, both ways: the request is one JSON object and a newline; the
answer is frames of a tag byte, a 4-byte length and the payload:
    a  accepted: from here on the server acts (before it, the CLI may fall back)
    o  bytes for stdout       e  text for stderr       x  the exit code, last
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from typing import NamedTuple

SOCKET = "run/control.sock"
FRAME = struct.Struct("!cI")
MAX_PATH = 107  # sun_path holds 108 bytes with its NUL
SERVER_ONLY = ("LIGHTCI_HOME", "LIGHTCI_TOKEN")  # variables that change no setting


def socket_path(home: str | os.PathLike) -> str:
    return os.path.join(home, SOCKET)


def own_settings() -> bool:
    """This CLI has settings of its own, which a server's trigger would not apply."""
    return any(k.startswith("LIGHTCI_") and k not in SERVER_ONLY for k in os.environ)


class Resume(NamedTuple):
    """A server took the trigger and went away while --wait followed it: follow it here."""

    build_id: int
    offset: int  # bytes of its log shown already


def trigger(home: str | os.PathLike, args) -> int | Resume | None:
    """The exit code of the trigger the home's server ran; None: no server took it."""
    path = socket_path(home)
    if own_settings() or len(os.fsencode(path)) > MAX_PATH:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:  # none listens (no file, a dead server's file, no permission)
        conn.close()
        return None
    request = {
        "command": "trigger",
        "job": args.job,
        "branch": args.branch,
        "commit": args.commit,
        "param": args.param or [],
        "priority": args.priority,
        "wait": args.wait,
        "tty": sys.stderr.isatty(),
    }
    with conn:
        try:
            conn.sendall(json.dumps(request).encode() + b"\n")
        except ConnectionError:  # it went before it read a byte: queue it here
            return None
        return _relay(conn.makefile("rb"), args.wait)


def _read(answer, size: int) -> bytes:
    try:
        return answer.read(size)
    except ConnectionError:
        return b""


def _relay(answer, wait: bool) -> int | Resume | None:
    accepted, shown = False, b""  # shown: stdout so far, the build's id and then its log
    while True:
        head = _read(answer, FRAME.size)
        if len(head) < FRAME.size:
            if not accepted:
                return None  # it took nothing: a server stopping, or too busy
            first, newline, log = shown.partition(b"\n")
            if wait and newline and first.isdigit():  # a stopping server: the home remains
                return Resume(int(first), len(log))
            print("lightci: the server closed the connection (lightci status)", file=sys.stderr)
            return 1
        tag, size = FRAME.unpack(head)
        payload = _read(answer, size)
        if tag == b"a":
            accepted = True
        elif tag == b"o":
            shown += payload if wait else b""
            sys.stdout.buffer.write(payload)
            sys.stdout.buffer.flush()
        elif tag == b"e":
            sys.stderr.write(payload.decode())
            sys.stderr.flush()
        elif tag == b"x":
            return int(payload)
