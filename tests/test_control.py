"""`lightci trigger` through the control socket of a running lightci (lightci.cli.control).

Real processes: `lightci scheduler` and `lightci web` hold the socket, the
CLI is the installed `lightci`. Which way a trigger went shows in what the
CLI imported (`python -X importtime`): the socket's way loads no peewee.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from lightci.cli import control, remote
from tests.conftest import BIN, free_port
from tests.helpers import wait_until


def socket_of(home) -> str:
    return remote.socket_path(home.path)


def answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


@pytest.fixture
def held(home, scheduler):
    """The home, its scheduler holding the control socket."""
    wait_until(lambda: answers(socket_of(home)), "the scheduler to hold the control socket")
    return home


def cli(home, *argv: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, bool]:
    """Run `lightci ARGV`; also whether it went through the socket (imported no peewee)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN / "lightci"), *argv],
        env={**home.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    imported = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    done.stderr = "".join(f"{line}\n" for line in done.stderr.splitlines() if line not in imported)
    return done, not any(line.endswith(" peewee") for line in imported)


def waiting(home, job: str) -> subprocess.Popen:
    """`lightci trigger JOB --wait` running, its output on pipes."""
    return subprocess.Popen(
        [str(BIN / "lightci"), "trigger", job, "--wait"],
        env=home.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


def test_a_trigger_goes_through_the_running_lightci_and_says_the_same(held):
    held.job("app", build="echo built")
    remote_run, by_socket = cli(held, "trigger", "app", "--branch", "main")
    assert by_socket
    local_run, by_socket = cli(held, "trigger", "app", "--branch", "main", env={"LIGHTCI_X_Y": "1"})
    assert not by_socket  # settings of its own: it queues by itself
    assert (remote_run.returncode, remote_run.stdout, remote_run.stderr) == (
        0,
        "1\n",
        ("queued app #1 key app:main\n"),
    )
    assert (local_run.returncode, local_run.stdout, local_run.stderr) == (
        0,
        "2\n",
        ("queued app #2 key app:main\n"),
    )
    assert [b["trigger"] for b in held.builds()] == ["cli", "cli"]


def test_trigger_wait_through_the_socket_prints_the_log_and_exits_by_the_result(held):
    held.start_worker()
    held.job("good", build="echo all fine")
    held.job("bad", build="echo about to fail; exit 3")
    done, by_socket = cli(held, "trigger", "good", "--wait")
    assert by_socket and done.returncode == 0
    assert done.stdout.startswith("1\n") and "all fine\n" in done.stdout
    assert done.stderr.splitlines()[-1] == "good #1: success"
    done, by_socket = cli(held, "trigger", "bad", "--wait")
    assert by_socket and done.returncode == 1
    assert "about to fail\n" in done.stdout
    assert done.stderr.splitlines()[-1] == "bad #1: failed (stage build exited 3)"


def test_a_wait_whose_reader_leaves_ends_in_one_line_not_a_traceback(held, tmp_path):
    """`lightci trigger app --wait | head -1` printed a BrokenPipeError traceback, exit 1."""
    held.start_worker()
    gate = tmp_path / "go"
    held.job("app", build=f"echo one\nwhile [ ! -e {gate} ]; do sleep 0.05; done\nseq 1 5000\n")
    proc = waiting(held, "app")
    assert proc.stdout.readline().strip().isdigit()  # the id, then the reader goes
    proc.stdout.close()
    gate.touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "Traceback" not in err.decode() and b"Broken pipe" in err
    assert held.wait_for([1])[0]["status"] == "success"  # the build itself goes on


def test_a_wait_whose_server_stops_follows_the_build_from_the_home(held, scheduler):
    """The scheduler relaying `trigger --wait` stops (a restart, say): the build goes on in
    the worker, and the CLI follows it from the home: the rest of its log once, its exit."""
    held.start_worker()
    gate = held.path / "gate"
    held.job("slow", build=f"echo before\nwhile [ ! -e {gate} ]; do sleep 0.05; done\necho after\n")
    follower = waiting(held, "slow")
    log = held.path / "builds" / "slow" / "1" / "log.txt"
    wait_until(lambda: log.exists() and "before" in log.read_text(), "the stage to start")
    scheduler.send_signal(signal.SIGTERM)
    scheduler.wait(30)
    gate.touch()
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert out.startswith(b"1\n") and out.count(b"before\n") == 1 and b"after\n" in out
    assert "following build 1 here" in err.decode()
    assert err.decode().splitlines()[-1] == "slow #1: success"


def test_a_bad_trigger_through_the_socket_fails_in_one_line_with_exit_2(held):
    held.job("app", build="true")
    for argv, said in (
        (["nope"], "lightci: no job 'nope'"),
        (["app", "-p", "novalue"], "lightci: -p takes NAME=VALUE, got 'novalue'"),
    ):
        done, by_socket = cli(held, "trigger", *argv)
        assert by_socket
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.startswith(said) and done.stderr.count("\n") == 1
    assert held.builds() == []


def send(path: str, data: bytes) -> bytes:
    """Send raw bytes as a request; what came back before the server closed."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(30)
        conn.connect(path)
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except BrokenPipeError:  # it stopped reading a request too long
            pass
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


GOOD = {
    "command": "trigger",
    "job": "app",
    "branch": "",
    "commit": "",
    "param": [],
    "priority": None,
    "wait": False,
    "tty": False,
}


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe garbage \x00\n",
        b"[1, 2, 3]\n",
        json.dumps({**GOOD, "command": "cancel"}).encode() + b"\n",
        json.dumps({**GOOD, "job": 7}).encode() + b"\n",
        json.dumps({**GOOD, "priority": True}).encode() + b"\n",
        json.dumps({**GOOD, "param": ["a=1", {"b": 2}]}).encode() + b"\n",
        json.dumps({k: v for k, v in GOOD.items() if k != "wait"}).encode() + b"\n",
        json.dumps({**GOOD, "branch": "x" * (control.MAX_REQUEST + 10)}).encode() + b"\n",
        json.dumps(GOOD).encode(),  # no newline: cut short
    ],
    ids=[
        "bytes",
        "not-an-object",
        "command",
        "job",
        "bool-priority",
        "param",
        "missing",
        "too-long",
        "cut-short",
    ],
)
def test_a_hostile_request_is_closed_unanswered_and_the_socket_still_serves(held, data):
    held.job("app", build="true")
    assert send(socket_of(held), data) == b""
    assert held.builds() == []
    done, by_socket = cli(held, "trigger", "app")
    assert by_socket and done.returncode == 0 and done.stdout == "1\n"


def test_a_silent_client_or_a_crowd_does_not_stop_the_trigger(held):
    held.job("app", build="true")
    crowd = []
    try:
        for _ in range(control.AT_ONCE + 1):  # one more than it serves at once, all silent
            conn = socket.socket(socket.AF_UNIX)
            conn.connect(socket_of(held))
            crowd.append(conn)
        done, _ = cli(held, "trigger", "app")  # turned away unanswered: it queues by itself
        assert done.returncode == 0 and done.stdout == "1\n"
    finally:
        for conn in crowd:
            conn.close()
    done, by_socket = cli(held, "trigger", "app")
    assert by_socket and done.stdout == "2\n"


def test_a_dead_holder_s_socket_is_taken_over_and_meanwhile_the_cli_queues_itself(held):
    held.job("app", build="true")
    holder = held.procs[-1]
    web = held.start_worker(str(BIN / "lightci"), "web", "--port", str(free_port()))
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(10)
    # the web process was waiting on the lock; it takes the socket over
    wait_until(lambda: answers(socket_of(held)), "the web process to take the socket over")
    done, by_socket = cli(held, "trigger", "app")
    assert by_socket and done.stdout == "1\n"
    os.killpg(web.pid, signal.SIGKILL)
    web.wait(10)
    assert os.path.exists(socket_of(held)) and not answers(socket_of(held))  # left behind
    done, by_socket = cli(held, "trigger", "app")
    assert not by_socket and done.returncode == 0 and done.stdout == "2\n"
