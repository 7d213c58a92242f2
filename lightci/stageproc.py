"""A stage's process, started through sh by a small process the worker keeps beside it.

sh forks the process that calls it and runs Python in the child until exec;
forking the worker (tens of MB, a dozen threads) costs page-table copies and
copy-on-write faults in both processes on every stage. So each worker process
starts one small helper (`python -m lightci.stageproc`, importing little more
than sh) and asks it to run each stage: argv, environment and working
directory as JSON, the output pipe's write end passed over a Unix socket
(SCM_RIGHTS). The helper forks from its main thread (bwrap's --die-with-parent
watches the thread that forked it), answers with the stage's pid, and later
with its exit code. The worker still signals the stage's pid and group itself
(cancel, timeout); the helper only starts and reaps.

The helper ends when the worker does (its socket closes); if it dies, the
next stage starts a new one, and a stage it was running ends as lost.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import sh

HEADER = struct.Struct("!I")  # the length of the JSON that follows


class StageLost(RuntimeError):
    """The helper died before it said how the stage ended (or started)."""


class StageProcess:
    """A running stage: its pid (= its process group: it runs in a session of its own)."""

    def __init__(self, pid: int, channel: socket.socket):
        self.pid, self._channel = pid, channel
        self.exit_code: int | None = None  # set once the helper reported it

    def wait(self) -> int:
        """The exit code; killed by a signal: 128 + the signal, the shell's convention."""
        try:
            reply, _ = _receive(self._channel)
        except (EOFError, OSError) as exc:
            raise StageLost(f"the process that started stage pid {self.pid} died") from exc
        finally:
            self._channel.close()
        code = reply["exit_code"]
        self.exit_code = 128 - code if code < 0 else code
        return self.exit_code


class Starter:
    """This process's helper: started on first use, started again if it died."""

    def __init__(self):
        self._lock = threading.Lock()
        self._helper: subprocess.Popen | None = None
        self._control: socket.socket | None = None

    def start(
        self, argv: list[str], env: dict, cwd: str, out: int, cgroup: Path | None
    ) -> StageProcess:
        """Run `argv` in a new session, stdin /dev/null, stdout and stderr to the fd `out`.

        `cgroup` is a cgroup.procs file the stage's process joins before exec.
        """
        request = {"argv": argv, "env": env, "cwd": cwd, "cgroup": cgroup and str(cgroup)}
        ours, theirs = socket.socketpair()
        try:
            with self._lock:
                try:
                    _send(self._running(), request, [theirs.fileno(), out])
                except OSError:  # it died since the last stage: one new helper, one retry
                    self._stop()
                    _send(self._running(), request, [theirs.fileno(), out])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            reply, _ = _receive(ours)
        except (EOFError, OSError) as exc:
            ours.close()
            raise StageLost("the process that starts stages died") from exc
        if "error" in reply:
            ours.close()
            raise OSError(f"could not start {argv[0]}: {reply['error']}")
        return StageProcess(reply["pid"], ours)

    def _running(self) -> socket.socket:
        if self._helper is not None and self._helper.poll() is None:
            return self._control
        self._stop()
        ours, theirs = socket.socketpair()
        roots = {str(Path(m.__file__).parent.parent) for m in (sh, sys.modules[__package__])}
        # -S: the helper needs no site-packages scan, only sh and this module.
        self._helper = subprocess.Popen(
            [sys.executable, "-S", "-m", "lightci.stageproc", str(theirs.fileno())],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sorted(roots))},
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl+C meant for the worker's graceful stop skips it
        )
        theirs.close()
        self._control = ours
        return ours

    def _stop(self) -> None:
        """Let go of a helper: closing its socket ends it (one stuck in a fork is killed)."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._helper is not None:
            try:
                self._helper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._helper.kill()
                self._helper.wait()
            self._helper = None


starter = Starter()


def _send(sock: socket.socket, message: dict, fds: list[int] = ()) -> None:
    data = json.dumps(message).encode()
    frame = HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [frame], fds) if fds else 0
    sock.sendall(frame[sent:])


def _receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict, list[int]]:
    head, fds = b"", []
    while len(head) < HEADER.size:
        chunk, got, _, _ = socket.recv_fds(
            sock, HEADER.size - len(head), max_fds, socket.MSG_CMSG_CLOEXEC
        )
        if not chunk:
            raise EOFError
        head, fds = head + chunk, fds + got
    (size,) = HEADER.unpack(head)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            raise EOFError
        body += chunk
    return json.loads(body), fds


# -- the helper process ------------------------------------------------------------


def main() -> None:
    """`python -m lightci.stageproc FD`: start stages asked for on the socket FD until it closes."""
    control = socket.socket(fileno=int(sys.argv[1]))
    control.set_inheritable(False)  # a stage must not reach this socket: it starts processes
    nothing = os.open(os.devnull, os.O_RDONLY)
    while True:
        try:
            request, (channel, out) = _receive(control, 2)
        except EOFError:
            return
        _start(request, socket.socket(fileno=channel), out, nothing)


def _start(request: dict, channel: socket.socket, out: int, nothing: int) -> None:
    cgroup = request["cgroup"]
    try:
        proc = sh.Command(request["argv"][0])(
            *request["argv"][1:],
            _preexec_fn=(lambda: Path(cgroup).write_text(str(os.getpid()))) if cgroup else None,
            _env=request["env"],
            _cwd=request["cwd"],
            _in=nothing,  # sh would feed a str _in to stdin as text
            _out=out,
            _err_to_out=True,
            _bg=True,
            _bg_exc=False,
            _new_session=True,
            _tty_out=False,
        )
    except (sh.CommandNotFound, sh.ForkException, OSError) as exc:
        _send(channel, {"error": str(exc).strip().splitlines()[-1]})
        channel.close()
        return
    finally:
        os.close(out)
    _send(channel, {"pid": proc.pid})
    threading.Thread(target=_report, args=(proc, channel), daemon=True).start()


def _report(proc: sh.RunningCommand, channel: socket.socket) -> None:
    try:
        proc.wait()
        code = proc.exit_code
    except sh.ErrorReturnCode as exc:
        code = exc.exit_code
    try:
        _send(channel, {"exit_code": code})
    except OSError:  # the worker is gone; nobody waits for this stage any more
        pass
    channel.close()


if __name__ == "__main__":
    main()
