"""A stage's process starts by subprocess (vfork + exec) from the thread that waits for it
(lightci.stageproc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from lightci import sandbox, stageproc
from lightci.errors import UserError
from tests.helpers import wait_gone, wait_until

ENV = {"PATH": os.environ["PATH"]}


def run(script: str, cwd, **kwargs) -> tuple[int, str]:
    reader, writer = os.pipe()
    try:
        proc = stageproc.start(["/bin/sh", "-c", script], ENV, str(cwd), writer, **kwargs)
    finally:
        os.close(writer)
    with os.fdopen(reader, "rb") as out:
        output = out.read().decode()
    return proc.wait(), output


def test_a_stage_runs_in_its_own_session_with_its_env_cwd_and_output(tmp_path):
    script = 'echo "$PATH in $(pwd)"; echo oops >&2; [ "$(ps -o sid= $$)" -eq $$ ]; exit 3'
    code, output = run(script, tmp_path)
    assert code == 3
    assert output == f"{ENV['PATH']} in {tmp_path}\noops\n"


def test_a_stage_is_a_child_of_the_process_that_waits_for_it(tmp_path):
    """No helper between them: the worker's build thread starts it and reaps it."""
    assert run("echo $PPID", tmp_path) == (0, f"{os.getpid()}\n")


def test_a_stage_killed_by_a_signal_exits_128_plus_the_signal(tmp_path):
    assert run("kill -9 $$", tmp_path)[0] == 128 + signal.SIGKILL


def test_a_stage_inherits_no_descriptor_but_stdin_stdout_stderr(tmp_path):
    leak = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leak, True)  # even one marked inheritable stays here
    try:
        code, output = run("exec ls /proc/self/fd", tmp_path)
    finally:
        os.close(leak)
    assert code == 0
    assert output.split() == ["0", "1", "2", "3"]  # 3: the directory ls reads


def test_a_stage_reads_nothing_from_stdin(tmp_path):
    assert run("cat; echo end", tmp_path) == (0, "end\n")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_program_that_cannot_start_says_why_and_leaves_no_descriptor_open(tmp_path):
    reader, writer = os.pipe()
    before = open_fds()
    with pytest.raises(UserError, match="could not start no-such-program: No such file"):
        stageproc.start(["no-such-program"], ENV, str(tmp_path), writer)
    assert open_fds() == before  # /dev/null and Popen's error pipe are closed again
    os.close(writer)
    os.close(reader)
    assert run("exit 0", tmp_path)[0] == 0


@pytest.mark.parametrize(
    "script, workdir, why",
    [
        ("#!/no/such/shell\necho hi\n", ".", "its #! line names a program that is not here"),
        ("echo hi\n", ".", "it is not a program, and it has no #! line"),
        # A stage before it removed the workspace: not the script's fault.
        ("#!/bin/sh\ntrue\n", "workspace", "its working directory {dir} is gone"),
    ],
    ids=["interpreter-missing", "no-hashbang", "workdir-gone"],
)
def test_a_script_that_cannot_start_says_why(tmp_path, script, workdir, why):
    path = tmp_path / "build.sh"
    path.write_text(script)
    path.chmod(0o755)
    cwd = tmp_path / workdir
    with pytest.raises(UserError, match=why.format(dir=cwd)):
        stageproc.start([str(path)], ENV, str(cwd), 1)


def test_a_stage_of_a_build_that_ended_lost_never_starts(tmp_path):
    """Recovery wrote the build's `ended` file (another process ended the build lost) while
    this worker was on its way to the next stage."""
    ended, ran = tmp_path / "ended", tmp_path / "ran"
    ended.touch()
    reader, writer = os.pipe()
    try:
        with pytest.raises(UserError, match="ended"):
            stageproc.start(
                ["/bin/sh", "-c", f"touch {ran}"], ENV, str(tmp_path), writer, ended=ended
            )
    finally:
        os.close(writer)
        os.close(reader)
    assert not ran.exists()


class AppearsDuringStart:
    """An `ended` file recovery writes between the look before the start and the one after."""

    def __init__(self, path):
        self.path, self.looks = path, 0

    def exists(self) -> bool:
        self.looks += 1
        if self.looks == 2:
            self.path.touch()
        return self.path.exists()


def test_a_stage_started_as_its_build_ended_lost_is_killed_at_once(tmp_path):
    ended = AppearsDuringStart(tmp_path / "ended")
    reader, writer = os.pipe()
    try:
        proc = stageproc.start(["sleep", "600"], ENV, str(tmp_path), writer, ended=ended)
    finally:
        os.close(writer)
    os.close(reader)
    assert ended.looks == 2
    assert proc.wait() == 128 + signal.SIGKILL


def test_a_memory_limited_stage_joins_its_cgroup_before_its_program_runs(tmp_path):
    """The stage's own pid is written (sh execs it): what it forks is inside from the start."""
    procs = tmp_path / "cgroup.procs"  # a plain file stands for the cgroup's
    procs.touch()
    reader, writer = os.pipe()
    try:
        proc = stageproc.start(
            ["/bin/sh", "-c", 'echo $$; cat "$0"', str(procs)],
            ENV,
            str(tmp_path),
            writer,
            cgroup=procs,
        )
    finally:
        os.close(writer)
    with os.fdopen(reader, "rb") as out:
        output = out.read().decode().split()
    assert proc.wait() == 0
    assert output == [str(proc.pid), str(proc.pid)]


def test_a_stage_that_cannot_join_its_cgroup_does_not_run_unlimited(tmp_path):
    procs = tmp_path / "gone" / "cgroup.procs"
    code, output = run(f"touch {tmp_path}/ran", tmp_path, cgroup=procs)
    assert code != 0
    assert output.startswith("lightci: ") and str(procs) in output  # the shell's own words
    assert not (tmp_path / "ran").exists()


def test_a_memory_limited_stage_whose_program_is_missing_ends_127_saying_which(tmp_path):
    procs = tmp_path / "cgroup.procs"
    procs.touch()
    reader, writer = os.pipe()
    try:
        proc = stageproc.start(
            [str(tmp_path / "missing.sh")], ENV, str(tmp_path), writer, cgroup=procs
        )
    finally:
        os.close(writer)
    with os.fdopen(reader, "rb") as out:
        output = out.read().decode()
    assert proc.wait() == 127
    assert output.startswith("lightci: ") and "missing.sh" in output


def test_stages_start_from_many_threads_at_once(tmp_path):
    """Each build's thread starts its own stages; nothing is shared between them."""
    results = {}

    def one(i: int) -> None:
        results[i] = run(f"echo {i}", tmp_path)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {i: (0, f"{i}\n") for i in range(16)}


def test_a_stage_goes_on_when_the_worker_dies_and_recovery_finds_it_by_its_workspace(tmp_path):
    """A stage outlives a SIGKILLed worker (nothing kills it but recovery), and carries the
    build's workspace in its environment from its exec on: recovery's marker."""
    worker = (
        "import os, sys\n"
        "from lightci import stageproc\n"
        f"env = {{**{ENV!r}, 'LIGHTCI_WORKSPACE': {str(tmp_path)!r}}}\n"
        "nothing = os.open(os.devnull, os.O_WRONLY)  # not our stdout: run() would wait\n"
        f"stage = stageproc.start(['sleep', '600'], env, {str(tmp_path)!r}, nothing)\n"
        "print(stage.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", worker], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    orphan = int(done.stdout)
    try:
        wait_until(lambda: orphan in sandbox.processes_of(tmp_path), "recovery's look to find it")
    finally:
        sandbox.kill_group(orphan, signal.SIGKILL)
    assert wait_gone(orphan)
