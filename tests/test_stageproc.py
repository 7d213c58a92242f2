"""A worker's stages start through its helper process (lightci.stageproc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from lightci import sandbox, stageproc, workspace
from lightci.stageproc import STARTING, StageLost, Starter
from tests.helpers import wait_for_file, wait_gone, wait_until

ENV = {"PATH": os.environ["PATH"]}
real_send = stageproc._send


def run(starter: Starter, script: str, cwd) -> tuple[int, str]:
    reader, writer = os.pipe()
    try:
        proc = starter.start(["/bin/sh", "-c", script], ENV, str(cwd), writer, None)
    finally:
        os.close(writer)
    with os.fdopen(reader, "rb") as out:
        output = out.read().decode()
    return proc.wait(), output


@pytest.fixture
def starter():
    """A starter whose helper runs: its stages go through the helper."""
    made = Starter()
    made.launch()
    yield made
    made._stop()


def parent_of_stage(starter: Starter, tmp_path) -> int:
    code, output = run(starter, "echo $PPID", tmp_path)
    assert code == 0
    return int(output)


def test_a_stage_that_finds_no_helper_starts_here_and_the_helper_goes_when_idle(tmp_path):
    starter = Starter(idle=1)
    try:
        assert parent_of_stage(starter, tmp_path) == os.getpid()  # no helper yet: sh forks us
        helper = starter._helper
        assert parent_of_stage(starter, tmp_path) == helper.pid  # the one that stage started
        # A second without a stage: its alarm ends it, with nothing here waking to ask.
        assert wait_gone(helper.pid)
        assert helper.poll() == -signal.SIGALRM
        assert parent_of_stage(starter, tmp_path) == os.getpid()
        assert starter._helper.pid != helper.pid
    finally:
        starter._stop()


def test_the_helper_never_goes_while_one_of_its_stages_runs(tmp_path):
    starter = Starter(idle=1)
    starter.launch()
    reader, writer = os.pipe()
    proc = starter.start(["/bin/sh", "-c", "exec sleep 600"], ENV, str(tmp_path), writer, None)
    os.close(writer)
    helper = starter._helper
    assert not wait_gone(helper.pid, timeout=3)  # three idle periods: it stays for its stage
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait() == 128 + signal.SIGTERM
    os.close(reader)
    assert wait_gone(helper.pid)


def test_a_stage_asked_for_as_the_helper_went_idle_starts_here(starter, sent, tmp_path):
    """The alarm fired with the request in its socket, unread: it started nothing."""
    helper = starter._helper
    os.kill(helper.pid, signal.SIGSTOP)  # it cannot read the request
    result = {}
    asking = threading.Thread(target=lambda: result.update(out=parent_of_stage(starter, tmp_path)))
    try:
        asking.start()
        assert sent.wait(30)  # it waits in the helper's socket, unread
        os.kill(helper.pid, signal.SIGALRM)  # what its alarm() does, a little early
    finally:
        os.kill(helper.pid, signal.SIGCONT)
    asking.join(timeout=30)
    assert helper.poll() == -signal.SIGALRM
    assert result["out"] == os.getpid()  # started here, once
    assert starter._helper.pid != helper.pid  # and a new helper for the stages after it


@pytest.fixture
def sent(monkeypatch) -> threading.Event:
    """Set once this process has sent a request to a helper."""
    done = threading.Event()

    def send(sock, message, fds=()):
        real_send(sock, message, fds)
        if fds:
            done.set()

    monkeypatch.setattr(stageproc, "_send", send)
    return done


def test_a_stage_runs_in_its_own_session_with_its_env_cwd_and_output(starter, tmp_path):
    script = 'echo "$PATH in $(pwd)"; echo oops >&2; [ "$(ps -o sid= $$)" -eq $$ ]; exit 3'
    code, output = run(starter, script, tmp_path)
    assert code == 3
    assert output == f"{ENV['PATH']} in {tmp_path}\noops\n"


def test_a_stage_killed_by_a_signal_exits_128_plus_the_signal(starter, tmp_path):
    assert run(starter, "kill -9 $$", tmp_path)[0] == 128 + signal.SIGKILL


def test_a_stage_inherits_no_descriptor_but_stdin_stdout_stderr(starter, tmp_path):
    code, output = run(starter, "exec ls /proc/self/fd", tmp_path)
    assert code == 0
    assert output.split() == ["0", "1", "2", "3"]  # 3: the directory ls reads


def test_a_program_that_cannot_start_says_why(starter, tmp_path):
    reader, writer = os.pipe()
    with pytest.raises(OSError, match="no-such-program"):
        starter.start(["no-such-program"], ENV, str(tmp_path), writer, None)
    os.close(writer)
    assert os.read(reader, 10) == b""  # the helper kept no copy of the pipe either
    os.close(reader)
    assert run(starter, "exit 0", tmp_path)[0] == 0


def test_a_helper_that_died_between_stages_is_replaced(starter, tmp_path):
    run(starter, "true", tmp_path)
    first = starter._helper.pid
    os.kill(first, signal.SIGKILL)
    # Reaped, not only a zombie leader: its other threads may still hold its socket.
    starter._helper.wait(timeout=15)
    assert run(starter, "echo again", tmp_path) == (0, "again\n")
    assert starter._helper.pid != first


def test_a_stage_whose_helper_died_ends_lost(starter, tmp_path):
    reader, writer = os.pipe()
    script = f"echo $$ > {tmp_path}/pid; exec sleep 600"
    proc = starter.start(["/bin/sh", "-c", script], ENV, str(tmp_path), writer, None)
    os.close(writer)
    assert int(wait_for_file(tmp_path / "pid")) == proc.pid
    os.kill(starter._helper.pid, signal.SIGKILL)
    with pytest.raises(StageLost):
        proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)  # the runner ends what is left, as after any stage
    assert wait_gone(proc.pid)
    os.close(reader)


def test_the_helper_ends_with_its_worker(tmp_path):
    worker = (
        "import os, sys\n"
        "from lightci.stageproc import starter\n"
        "r, w = os.pipe()\n"
        f"starter.start(['/bin/true'], {ENV!r}, {str(tmp_path)!r}, w, None).wait()\n"
        "print(starter._helper.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", worker], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert wait_gone(int(done.stdout))


def test_a_stage_asked_for_before_its_build_ended_lost_never_starts(starter, sent, tmp_path):
    """The soak's overlap: a worker SIGKILLed with its request in the helper's socket; the
    build ends lost, the next of its key starts, then the helper got to the request."""
    root = tmp_path / "build"
    dirs = workspace.BuildDirs(root=root, cache=root / "cache")
    dirs.create()
    ran = tmp_path / "ran"
    helper = starter._helper.pid
    reader, writer = os.pipe()
    started = {}
    argv = ["/bin/sh", "-c", f"touch {ran}"]
    os.kill(helper, signal.SIGSTOP)  # it has not read the request yet
    try:
        asking = threading.Thread(
            target=lambda: started.update(
                proc=starter.start(argv, ENV, str(dirs.workspace), writer, None, dirs.ended)
            )
        )
        asking.start()
        assert sent.wait(30)
        workspace.mark_ended(root)  # what recovery does as it ends the build lost
    finally:
        os.kill(helper, signal.SIGCONT)
    asking.join(timeout=15)
    os.close(writer)
    os.close(reader)
    assert started["proc"].wait() == 128 + signal.SIGKILL
    assert not ran.exists()


def test_a_stage_started_here_after_its_build_ended_never_starts(tmp_path):
    ended, ran = tmp_path / "ended", tmp_path / "ran"
    ended.touch()
    starter = Starter()  # no helper runs: sh forks this process
    reader, writer = os.pipe()
    try:
        proc = starter.start(
            ["/bin/sh", "-c", f"touch {ran}"], ENV, str(tmp_path), writer, None, ended
        )
        os.close(writer)
        assert proc.wait() == 128 + signal.SIGKILL
        assert not ran.exists()
    finally:
        os.close(reader)
        starter._stop()


def test_recovery_finds_a_stage_between_fork_and_exec_by_its_name_and_directory(tmp_path):
    """Its environment is still its parent's then: only its name and directory tell."""
    named = (
        "import ctypes, sys, time\n"
        f"ctypes.CDLL(None).prctl(15, {STARTING.encode()!r}, 0, 0, 0)\n"
        "print('named', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", named], cwd=tmp_path, stdout=subprocess.PIPE, text=True, env=ENV
    )
    bystander = subprocess.Popen(["sleep", "600"], cwd=tmp_path)  # someone's shell in there
    try:
        assert proc.stdout.readline() == "named\n"
        assert bystander.pid not in sandbox.processes_of(tmp_path, starting=True)
        assert proc.pid not in sandbox.processes_of(tmp_path)
        assert proc.pid in sandbox.processes_of(tmp_path, starting=True)
        assert proc.pid not in sandbox.processes_of(tmp_path / "other", starting=True)
    finally:
        for started in (proc, bystander):
            started.kill()
            started.wait()


def test_a_process_older_than_the_build_is_not_its_leftover_whatever_it_carries(tmp_path):
    """The leftover search reads no environment of what ran before the build started."""
    marked = subprocess.Popen(["sleep", "600"], env={**ENV, "LIGHTCI_WORKSPACE": str(tmp_path)})
    try:
        now = time.time()
        wait_until(lambda: marked.pid in sandbox.processes_of(tmp_path, since=now), "the marker")
        later = now + sandbox.CLOCK_SLACK + 5  # a build that started after it
        assert marked.pid not in sandbox.processes_of(tmp_path, since=later)
        assert marked.pid in sandbox.processes_of(tmp_path)  # recovery looks at every one
    finally:
        marked.kill()
        marked.wait()
