"""The control socket: a running lightci takes `lightci trigger` off the CLI's hands.

Laminar's laminarc is a thin client of its daemon; `lightci trigger` was a
whole lightci that imported peewee and the domain to insert one row (50 ms
of a 90 ms command). Now every long-running process of a home (serve, web,
worker, scheduler) offers to hold HOME/run/control.sock; one holds it at a
time (an flock: the next one takes over when the holder dies, without a
timer). The CLI sends its parsed arguments (lightci.cli.remote has the
wire), this process runs the same `queue` the CLI would, its output framed
back, `--wait` included. The socket is as private as the home: whoever
may connect may run `lightci` on the home anyway. Still, a request is
anyone's bytes: a size cap, a read deadline, every field's type checked,
and a cap on requests at once.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import socket
import threading
from pathlib import Path

from lightci.cli import remote
from lightci.cli.builds import Terminal, queue
from lightci.cli.home import FAILURES, close, failed

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024  # bytes of JSON: a trigger's arguments are a few hundred
READ_DEADLINE = 5.0  # seconds a client has to send its request
SEND_DEADLINE = 300.0  # seconds a client may leave its output unread (a paused terminal)
AT_ONCE = 32  # requests served at once; more are turned away (their CLI queues itself)
FIELDS = {
    "job": str,
    "branch": str,
    "commit": str,
    "param": list,
    "priority": (int, type(None)),
    "wait": bool,
    "tty": bool,
}


def offer(home: Path) -> threading.Thread:
    """Hold the home's control socket from a thread, once no other process holds it."""
    holder = threading.Thread(target=_hold, args=(home,), name="lightci-control", daemon=True)
    holder.start()
    return holder


def _hold(home: Path) -> None:
    path = Path(remote.socket_path(home))
    if len(bytes(path)) > remote.MAX_PATH:
        log.warning("no control socket: %s is too long a path (the CLI queues by itself)", path)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 (held for the process's life)
        fcntl.flock(lock, fcntl.LOCK_EX)  # sleeps while another process holds the socket
        path.unlink(missing_ok=True)  # the file of a holder that died
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        path.chmod(0o600)  # whatever the umask: only this user's CLI may connect
        server.listen(AT_ONCE)
    except OSError as exc:  # a read-only home: the CLI queues by itself
        log.warning("no control socket at %s: %s", path, exc)
        return
    slots = threading.BoundedSemaphore(AT_ONCE)
    while True:
        conn, _ = server.accept()
        if not slots.acquire(blocking=False):
            conn.close()  # nothing was accepted: that CLI queues the build itself
            continue
        threading.Thread(
            target=_serve, args=(conn, slots), name="lightci-control-request", daemon=True
        ).start()


def _serve(conn: socket.socket, slots: threading.BoundedSemaphore) -> None:
    try:
        with conn:
            request = _request(conn)
            if request is not None:
                _run(conn, request)
    finally:
        close()  # this thread's database connection
        slots.release()


def _request(conn: socket.socket) -> argparse.Namespace | None:
    """The request, checked; None (and the connection closed unanswered) when it is not one."""
    conn.settimeout(READ_DEADLINE)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = conn.recv(MAX_REQUEST + 1 - len(data))
            if not chunk or len(data) + len(chunk) > MAX_REQUEST:
                raise ValueError("cut short or too long")
            data += chunk
        request = json.loads(data)
        if not isinstance(request, dict) or request.get("command") != "trigger":
            raise ValueError("not a trigger")
        for name, kind in FIELDS.items():
            if not _typed(request.get(name), kind):
                raise ValueError(f"{name} is missing or of the wrong type")
        if not all(isinstance(p, str) for p in request["param"]):
            raise ValueError("param holds a non-string")
    except (OSError, ValueError) as exc:  # json's errors are ValueErrors too
        log.warning("control socket: a request refused: %s", exc)
        return None
    return argparse.Namespace(**{name: request[name] for name in FIELDS})


def _typed(value, kind) -> bool:
    """isinstance, where a bool is no int (JSON's true is not a priority)."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


class _Channel:
    """One of the CLI's streams, as frames on the socket."""

    def __init__(self, conn: socket.socket, tag: bytes):
        self.conn, self.tag = conn, tag

    def write(self, data: str | bytes) -> int:
        payload = data.encode() if isinstance(data, str) else data
        if payload:
            self.conn.sendall(remote.FRAME.pack(self.tag, len(payload)) + payload)
        return len(data)

    def flush(self) -> None:
        pass


def _run(conn: socket.socket, args: argparse.Namespace) -> None:
    conn.settimeout(SEND_DEADLINE)
    err = _Channel(conn, b"e")
    try:
        _Channel(conn, b"a").write(b"-")
        try:
            code = queue(args, Terminal(_Channel(conn, b"o"), err, args.tty))
        except (ConnectionError, TimeoutError):
            raise  # the CLI's end, below; not a refusal of the home's
        except FAILURES as exc:
            code = failed(exc, err)
        _Channel(conn, b"x").write(str(code))
    except (ConnectionError, TimeoutError):
        return  # the CLI is gone (Ctrl+C) or stopped reading: the build goes on
