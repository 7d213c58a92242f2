"""Where a host stage runs: inside bubblewrap, or (not isolated) straight on the host.

[builds] sandbox = "auto" | "bwrap" | "none". Inside bwrap a stage sees the
system read-only, its own workspace, home, tmp (also at /tmp), artifacts and
cache read-write, its job's scripts and jobs/_shared read-only, and nothing
else of the lightci home: no lightci.toml, secrets.env, job table, log files,
mirrors or other builds. It runs in its own PID namespace, so it cannot see or
signal other builds' processes, and whatever it started ends when its main
process does. It keeps no capabilities, even when lightci runs as root; the
network stays, as builds fetch their dependencies.

Without bwrap the stage runs as before, and the runner ends what it left
behind by the LIGHTCI_WORKSPACE every build process carries (processes_of).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lightci.config import Settings
from lightci.errors import UserError
from lightci.jobs import Job
from lightci.workspace import BuildDirs

LEFTOVER_ROUNDS = 10  # looks for what a finished stage left running, at most
# Seconds a process may seem to have started before the build that started it:
# psutil dates a process by the boot time, in whole seconds and moved by any
# step of the clock since (NTP); a clock stepped back further lets a leftover go.
CLOCK_SLACK = 60.0


@dataclass(frozen=True)
class Sandbox:
    """How this process runs host stages; `reason` says why they are not isolated."""

    bwrap: str  # the bwrap program, "" when stages run on the host
    reason: str = ""

    @property
    def isolated(self) -> bool:
        return bool(self.bwrap)

    def argv(self, cfg: Settings, job: Job, dirs: BuildDirs, command: list[str]) -> list[str]:
        """The command line that runs `command` as a stage of this build."""
        if not self.bwrap:
            return command
        home, jobs_dir = cfg.home, cfg.jobs_dir
        own = [dirs.workspace, dirs.home, dirs.tmp, dirs.artifacts, dirs.cache]
        args = [self.bwrap, "--cap-drop", "ALL", "--ro-bind", "/", "/", "--dev", "/dev"]
        args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys"]
        args += ["--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger"]
        args += ["--bind", str(dirs.tmp), "/tmp", "--tmpfs", str(home)]
        if not jobs_dir.is_relative_to(home):
            args += ["--tmpfs", str(jobs_dir)]  # other jobs' job.toml hold webhook secrets
        for path in own:
            args += ["--bind", str(path), str(path)]
        for path in (jobs_dir / job.name, jobs_dir / "_shared"):
            args += ["--ro-bind-try", str(path), str(path)]
        server_toml = jobs_dir / job.name / "job.toml"
        if server_toml.is_file():  # its webhook_secret and notify URLs: a fork's PR build
            args += ["--ro-bind", os.devnull, str(server_toml)]  # must not sign a push with it
        args += ["--chdir", str(dirs.workspace)]
        args += ["--unshare-pid", "--die-with-parent", "--new-session", "--", *command]
        return args


def choose(cfg: Settings) -> Sandbox:
    """The sandbox [builds] sandbox asks for, as this machine allows it."""
    mode = cfg["builds"]["sandbox"]
    if mode == "none":
        return Sandbox("", reason='[builds] sandbox = "none"')
    program = shutil.which("bwrap") or ""
    problem = probe(program) if program else "bwrap is not installed (Debian package bubblewrap)"
    if not problem:
        return Sandbox(program)
    if mode == "bwrap":
        raise UserError(f'[builds] sandbox = "bwrap", but bwrap does not work here: {problem}')
    return Sandbox("", reason=problem)


def warning(cfg: Settings) -> str:
    """One line for the dashboard: "" while host builds are isolated."""
    try:
        box = choose(cfg)
    except UserError as exc:
        return f"Host builds fail: {exc}."
    if box.isolated:
        return ""
    return (
        f"Host builds are not isolated ({box.reason}): a build can read and write what "
        "lightci's user can, and see other builds' processes."
    )


@functools.lru_cache(maxsize=8)
def probe(program: str) -> str:
    """Why bwrap cannot make a sandbox here (no user namespaces, ...), or "" when it can."""
    argv = [program, "--cap-drop", "ALL", "--ro-bind", "/", "/", "--dev", "/dev"]
    argv += ["--proc", "/proc", "--unshare-pid", "--die-with-parent", "--new-session", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{program}: {exc}"
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return f"{program} exited {done.returncode}" + (f": {said[-1]}" if said else "")
    return ""


# -- the processes of a build ---------------------------------------------------


def processes_of(workspace: Path, since: float | None = None) -> dict[int, int]:
    """{pid: pgid} of this host's processes that run in a build's environment.

    A stage runs with LIGHTCI_WORKSPACE set, and so does everything it starts
    (unless it clears its environment), even what moved to another session.
    The marker keeps a reused PGID safe from us; a stage has it from its exec
    on (lightci.stageproc covers the moment before). `since`: only processes
    started after that time, less CLOCK_SLACK; older ones cannot descend from
    the build, and their environments (the most of this look's cost) are not read.
    """
    import psutil  # see peaks: a worker at rest does without it

    marker = str(workspace)
    oldest = None if since is None else since - CLOCK_SLACK
    found = {}
    for proc in psutil.process_iter():
        try:
            if oldest is not None and proc.create_time() < oldest:
                continue
            if proc.environ().get("LIGHTCI_WORKSPACE") != marker:
                continue
            found[proc.pid] = os.getpgid(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def end_leftovers(pid: int, workspace: Path, since: float) -> None:
    """After a stage's main process exited: what it started dies with it.

    Its process group first, then every process still carrying the build's
    workspace (what called setsid) that started after the build did (`since`,
    its started_at); bwrap's PID namespace has done both already.
    """
    kill_group(pid, signal.SIGKILL)
    # Look again while there are any: one may have forked between the look and its kill.
    for _ in range(LEFTOVER_ROUNDS):
        found = processes_of(workspace, since=since)
        if not found:
            return
        for leftover in found:
            try:
                os.kill(leftover, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def signal_stage(pid: int, sig: int, isolated: bool) -> None:
    """Signal a running stage: its group, and every process below it.

    bwrap dies of a TERM and takes its sandbox with it at once (SIGKILL), so
    a sandboxed stage's TERM goes to the processes inside, which get their grace.
    """
    if sig != signal.SIGKILL:
        import psutil

        try:
            for child in psutil.Process(pid).children(recursive=True):
                child.send_signal(sig)
        except psutil.Error:
            pass
        if isolated:
            return
    kill_group(pid, sig)


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
