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

The helper ends when the worker does (its socket closes), and after
HELPER_IDLE seconds without a stage, by its own alarm (Idle), so a worker at
rest is one process and nothing wakes to make it so. A
stage that finds no helper running starts here, through sh in the worker, as
before the helper existed, while a new helper starts for the stages after it:
the first stage after a rest waits for no interpreter's start. A stage its
helper was running when the helper died ends as lost.

sh is imported where a stage starts, not with this module: its import (asyncio,
ssl, importlib.metadata: 5.7 MB) would be a sixth of a worker that has run no
build yet, and of `serve`.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib.machinery import PathFinder
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sh

HEADER = struct.Struct("!I")  # the length of the JSON that follows
HELPER_IDLE = 30.0  # seconds without a stage before the helper ends
STARTING = "lightci-stage"  # a stage's process between fork and exec is named so (comm)
# Looked up now: a forked child of a threaded process must not import or dlopen.
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


class StageLost(RuntimeError):
    """The helper died before it said how the stage ended (or started)."""


class StageProcess:
    """A running stage: its pid (= its process group: it runs in a session of its own)."""

    def __init__(self, pid: int, channel: socket.socket):
        self.pid, self._channel = pid, channel
        self.started = time.monotonic()
        self.exit_code: int | None = None  # set once the helper reported it

    def wait(self) -> int:
        """The exit code; killed by a signal: 128 + the signal, the shell's convention."""
        try:
            reply, _ = _receive(self._channel)
        except (EOFError, OSError) as exc:
            raise StageLost(f"the process that started stage pid {self.pid} died") from exc
        finally:
            self._channel.close()
        self.exit_code = _shell_code(reply["exit_code"])
        return self.exit_code


class LocalStage:
    """A stage sh started from this process (no helper was running)."""

    def __init__(self, proc: sh.RunningCommand):
        self.pid, self._proc = proc.pid, proc
        self.started = time.monotonic()
        self.exit_code: int | None = None

    def wait(self) -> int:
        self.exit_code = _shell_code(_exit_code(self._proc))
        return self.exit_code


class Starter:
    """This process's helper: started when a stage finds none; it ends itself when idle."""

    def __init__(self, idle: float = HELPER_IDLE):
        self.idle = max(math.ceil(idle), 1)  # whole seconds: the helper's alarm()
        self._lock = threading.RLock()
        self._helper: subprocess.Popen | None = None
        self._control: socket.socket | None = None

    def start(
        self,
        argv: list[str],
        env: dict,
        cwd: str,
        out: int,
        cgroup: Path | None = None,
        ended: Path | None = None,
    ) -> StageProcess | LocalStage:
        """Run `argv` in a new session, stdin /dev/null, stdout and stderr to the fd `out`.

        `cgroup` is a cgroup.procs file the stage's process joins before exec;
        while the file `ended` exists the process kills itself instead of exec:
        see `_prepare`.
        """
        request = {"argv": argv, "env": env, "cwd": cwd}
        request |= {"cgroup": cgroup and str(cgroup), "ended": ended and str(ended)}
        ours, theirs = socket.socketpair()
        try:
            with self._lock:
                helper = self._helper
                sent = self._alive() and self._ask(request, [theirs.fileno(), out])
                if not sent:  # none yet, gone idle, or dead: this stage starts here
                    self.launch()
        finally:
            theirs.close()
        if not sent:
            ours.close()
            return _here(request, out)
        try:
            reply, _ = _receive(ours)
        except (EOFError, OSError) as exc:
            ours.close()
            if helper.wait() != -signal.SIGALRM:
                raise StageLost("the process that starts stages died") from exc
            # It went idle with the request unread: its alarm ends it only while
            # it starts nothing (see main). So this stage starts here after all.
            self.launch()
            return _here(request, out)
        if "error" in reply:
            ours.close()
            raise OSError(f"could not start {argv[0]}: {reply['error']}")
        return StageProcess(reply["pid"], ours)

    def launch(self) -> None:
        """Start the helper unless it runs; it serves the stages that come after this call."""
        with self._lock:
            if self._alive():
                return
            self._stop()
            ours, theirs = socket.socketpair()
            # Where sh lies, found without importing it (PathFinder skips sys.modules:
            # an imported sh replaces its module there by one without a spec).
            places = (PathFinder.find_spec("sh").origin, sys.modules[__package__].__file__)
            roots = {str(Path(place).parent.parent) for place in places}
            # -S: the helper needs no site-packages scan, only sh and this module.
            argv = ["-S", "-m", "lightci.stageproc", str(theirs.fileno()), str(self.idle)]
            self._helper = subprocess.Popen(
                [sys.executable, *argv],
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sorted(roots))},
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl+C meant for the worker's graceful stop skips it
            )
            theirs.close()
            self._control = ours

    def _ask(self, request: dict, fds: list[int]) -> bool:
        try:
            _send(self._control, request, fds)
        except OSError:  # it died, or went idle, since its last stage
            return False
        return True

    def _alive(self) -> bool:
        """Whether the helper runs; one that ended (idle, or dead) is reaped here.

        Until then it is a zombie: no memory, a line in ps. Nothing in this
        process wakes to reap it, so a worker at rest stays asleep.
        """
        return self._helper is not None and self._helper.poll() is None

    def _stop(self) -> None:
        """Let go of the helper: SIGKILL when it still runs (tests), then reap it."""
        with self._lock:
            if self._control is not None:
                self._control.close()
                self._control = None
            if self._helper is not None:
                self._helper.kill()  # nothing when it was reaped already
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
    """`python -m lightci.stageproc FD IDLE`: start stages asked for on the socket FD until
    it closes, or until no stage has run for IDLE seconds."""
    import sh  # noqa: F401  loaded before the first request, not while a stage waits

    control = socket.socket(fileno=int(sys.argv[1]))
    control.set_inheritable(False)  # a stage must not reach this socket: it starts processes
    # A worker started before an upgrade passes no IDLE: the default then.
    idle = Idle(int(sys.argv[2]) if len(sys.argv) > 2 else math.ceil(HELPER_IDLE))
    nothing = os.open(os.devnull, os.O_RDONLY)
    while True:
        try:
            request, (channel, out) = _receive(control, 2)
        except EOFError:
            return
        idle.busy()
        _start(request, socket.socket(fileno=channel), out, nothing, idle)


class Idle:
    """The helper's end at rest: an alarm() armed while it runs no stage.

    SIGALRM's default action ends the process in the kernel: neither the
    helper nor the worker wakes for it. The alarm is disarmed as a request has
    been read, before anything starts, so a helper that the alarm ended started
    nothing of its last request: the worker, seeing SIGALRM, starts the stage
    itself (Starter.start).
    """

    def __init__(self, seconds: int):
        self.seconds, self._running, self._lock = seconds, 0, threading.Lock()
        signal.alarm(seconds)

    def busy(self) -> None:
        with self._lock:
            self._running += 1
            signal.alarm(0)

    def done(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                signal.alarm(self.seconds)


def _start(request: dict, channel: socket.socket, out: int, nothing: int, idle: Idle) -> None:
    try:
        proc = _spawn(request, out, nothing)
    except OSError as exc:
        _send(channel, {"error": str(exc)})
        channel.close()
        idle.done()
        return
    finally:
        os.close(out)
    _send(channel, {"pid": proc.pid})
    threading.Thread(target=_report, args=(proc, channel, idle), daemon=True).start()


def _here(request: dict, out: int) -> LocalStage:
    """A stage started by sh in this process (no helper to ask)."""
    try:
        return LocalStage(_spawn(request, out))
    except OSError as exc:
        raise OSError(f"could not start {request['argv'][0]}: {exc}") from exc


def _spawn(request: dict, out: int, stdin: int = -1) -> sh.RunningCommand:
    """The one way a stage starts, in the helper or (no helper running) in the worker.

    A command that cannot start raises OSError with sh's last line on why.
    """
    import sh

    nothing = stdin if stdin >= 0 else os.open(os.devnull, os.O_RDONLY)
    argv = request["argv"]
    try:
        return sh.Command(argv[0])(
            *argv[1:],
            _preexec_fn=_prepare(request["cgroup"], request["ended"]),
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
    except (sh.CommandNotFound, sh.ForkException) as exc:
        raise OSError(_why(exc)) from exc
    finally:
        if nothing != stdin:
            os.close(nothing)


def _prepare(cgroup: str | None, ended: str | None) -> Callable[[], None]:
    """What the stage's process does after fork and chdir, before exec.

    A build that ended lost while its stage was on the way (the worker died
    with the request sent) must not start it afterwards: recovery writes the
    build's `ended` file, then kills what runs in the build's environment or,
    named STARTING, sits in its workspace. This process takes that name, then
    looks for the file: either it sees the file, or recovery sees it.
    """

    def prepare() -> None:
        _name_self(STARTING.encode())
        if cgroup:
            Path(cgroup).write_text(str(os.getpid()))
        if ended and os.path.exists(ended):
            os.kill(os.getpid(), signal.SIGKILL)

    return prepare


def _name_self(name: bytes) -> None:
    if _prctl is not None:  # macOS has no settable process name: the file check stays
        _prctl(15, name, 0, 0, 0)  # 15: PR_SET_NAME


def _exit_code(proc: sh.RunningCommand) -> int:
    import sh

    try:
        proc.wait()
        return proc.exit_code
    except sh.ErrorReturnCode as exc:
        return exc.exit_code


def _why(exc: Exception) -> str:
    return str(exc).strip().splitlines()[-1]


def _shell_code(code: int) -> int:
    return 128 - code if code < 0 else code


def _report(proc: sh.RunningCommand, channel: socket.socket, idle: Idle) -> None:
    code = _exit_code(proc)
    try:
        _send(channel, {"exit_code": code})
    except OSError:  # the worker is gone; nobody waits for this stage any more
        pass
    channel.close()
    idle.done()


if __name__ == "__main__":
    main()
    # Out without the interpreter's teardown (sh, asyncio, threads: tens of ms of a
    # resting worker's CPU): every stage this process started has been reported.
    os._exit(0)
