"""A stage's process: started by subprocess (vfork, then exec) from the thread that waits for it.

Not through sh, which the rest of lightci uses for commands (git): sh forks
the caller for real, runs Python in the child until exec and starts three
threads per command. Measured from a process as small as could be (README,
"Stages"), that was 3.65 ms of CPU a start against 0.77 ms for
`subprocess.Popen`, which vforks: the child shares the parent's memory until
its exec, so nothing is copied, whatever the worker's size. That 2.9 ms was
most of what kept a no-op build dearer than Laminar's, and a small helper
process that started stages through sh (this module until then) saved the
copying of a large worker, not sh's own cost.

vfork runs no Python in the child, so what a stage's process did before its
exec now happens around it:

- A build that ended lost (recovery, from another process) must not start a
  stage afterwards. Recovery writes the build's `ended` file, then kills what
  runs with the build's workspace in its environment. The file is looked for
  before the start and again right after it: a process started after recovery
  wrote the file is killed by this second look, and one started before is
  already exec'd, with the stage's environment, when recovery looks. The gap
  left: a start that overlaps the file's writing runs from its exec until the
  second look, normally well under a millisecond; a worker stopped in between
  (the case recovery guards against) makes the second look as late as its
  resumption. The child used to look itself, before its exec, at 2.9 ms a stage.
- A stage under a memory limit joins its cgroup before its program runs, so
  nothing it forks escapes the limit: `/bin/sh` writes its own pid to
  cgroup.procs and execs the stage (about 0.5 ms more, paid only with a limit).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

from lightci.errors import UserError

# $0: the name the shell's own messages carry; $1: the cgroup.procs file; then the stage.
# dash's echo is a builtin: one write(). A failed join or exec ends the stage (exit 2, 127)
# with the shell's line on why in the build's log.
JOIN_CGROUP = 'echo $$ > "$1" && shift && exec "$@"'


class Stage:
    """A running stage: its pid (= its process group: it runs in a session of its own)."""

    def __init__(self, popen: subprocess.Popen):
        self.pid, self._popen = popen.pid, popen
        self.started = time.monotonic()
        self.exit_code: int | None = None  # set once it ended (the watchdog reads it)
        self.ended_fd = _pidfd(popen.pid)  # readable once it ended (Linux); else None

    def ended(self) -> bool:
        return self._popen.poll() is not None

    def wait(self) -> int:
        """The exit code; killed by a signal: 128 + the signal, the shell's convention."""
        code = self._popen.wait()
        if self.ended_fd is not None:
            os.close(self.ended_fd)
            self.ended_fd = None
        self.exit_code = 128 - code if code < 0 else code
        return self.exit_code


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when the process ends (close-on-exec): Linux 5.3
    on; None elsewhere (macOS), or where the kernel refuses (the caller then polls)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError:
        return None


def start(
    argv: list[str],
    env: dict,
    cwd: str,
    out: int,
    cgroup: Path | None = None,
    ended: Path | None = None,
) -> Stage:
    """Run `argv` in a new session, stdin /dev/null, stdout and stderr to the fd `out`.

    `cgroup`: a cgroup.procs file the stage joins before its program runs.
    `ended`: while this file exists no stage starts (UserError), and one that
    started as it appeared is killed at once (see the module's docstring).
    A program that cannot start raises UserError saying why.
    """
    if ended is not None and ended.exists():
        raise UserError("the build has ended (lost) elsewhere: no stage of it starts any more")
    if cgroup is not None:
        argv = ["/bin/sh", "-c", JOIN_CGROUP, "lightci", str(cgroup), *argv]
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise UserError(f"could not start {argv[0]}: {_why(argv[0], cwd, exc)}") from exc
    stage = Stage(popen)
    if ended is not None and ended.exists():
        try:
            os.killpg(stage.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return stage


def _why(program: str, cwd: str, exc: OSError) -> str:
    if exc.filename == cwd and not os.path.isdir(cwd):  # the chdir failed, not the exec
        return f"its working directory {cwd} is gone"
    if os.path.isabs(program) and os.path.isfile(program):
        if isinstance(exc, FileNotFoundError):  # execve's ENOENT for a file that is there
            return "its #! line names a program that is not here"
        if exc.errno == errno.ENOEXEC:
            return "it is not a program, and it has no #! line (such as #!/bin/sh)"
    return exc.strerror or str(exc)
