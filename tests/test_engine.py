"""The build engine as users live it: keys, slots, FIFO, timeouts, cancels, isolation.

Every scenario runs real `huey_consumer lightci.tasks.huey` processes on one
SQLite home, triggered through the real `lightci` command. Where an ordering
matters, builds wait on a gate file the test opens once it has seen the state
it wants (two running, one queued): a busy machine only makes them slower.
"""

from __future__ import annotations

import base64
import itertools
import os
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, wait_for_file, wait_gone, wait_until

# A stage that records when it ran, so tests can check who overlapped whom. With a
# GATE it holds until the test creates that file, else it naps.
RECORD = """
echo "$LIGHTCI_BUILD_ID $LIGHTCI_KEY start $(date +%s.%N)" >> "$TRACE"
if [ -n "${GATE:-}" ]; then
  while [ ! -e "$GATE" ]; do sleep 0.02; done
else
  sleep "${NAP:-0.3}"
fi
echo "$LIGHTCI_BUILD_ID $LIGHTCI_KEY end $(date +%s.%N)" >> "$TRACE"
"""


def traced_job(home, name="app", key="{branch}", nap="0.3", extra="", gate: Path | None = None):
    """A job whose build records its start and end; it naps, or holds until gate exists."""
    trace = home.path / "trace.txt"
    gate_path = gate or ""
    home.job(
        name,
        f"""
        key = "{key}"
        {extra}
        [params]
        flavor = "dev"
        [env]
        TRACE = "{trace}"
        NAP = "{nap}"
        GATE = "{gate_path}"
        """,
        build=RECORD,
    )
    return trace


def intervals(trace: Path) -> dict[int, dict]:
    runs: dict[int, dict] = {}
    for line in trace.read_text().splitlines():
        build_id, key, what, stamp = line.split()
        runs.setdefault(int(build_id), {"key": key})[what] = float(stamp)
    return runs


def max_concurrency(runs) -> int:
    events = sorted(
        itertools.chain.from_iterable(((r["start"], 1), (r["end"], -1)) for r in runs.values()),
        key=lambda e: (e[0], e[1]),
    )
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak


def overlaps(a, b) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def started(trace: Path) -> set[int]:
    return set(intervals(trace)) if trace.exists() else set()


def wait_started(trace: Path, ids, timeout: float = 60) -> None:
    """Until every build in ids has written its start line: its stage runs now."""
    wait_until(lambda: set(ids) <= started(trace), f"builds {list(ids)} to start", timeout)


def statuses(home) -> list[str]:
    return [r["status"] for r in home.builds()]


def test_two_builds_of_the_same_key_run_one_after_the_other(home):
    gate = home.path / "gate"
    trace = traced_job(home, key="{flavor}_{branch}", gate=gate)
    home.start_worker()
    home.start_worker()
    ids = [home.trigger("app", "--branch", "main") for _ in range(3)]
    wait_started(trace, ids[:1])
    assert statuses(home) == ["running", "queued", "queued"]  # idle workers, but one key
    gate.touch()
    rows = home.wait_for(ids)
    assert [r["status"] for r in rows] == ["success"] * 3
    runs = intervals(trace)
    for a, b in itertools.combinations(ids, 2):
        assert not overlaps(runs[a], runs[b]), f"builds {a} and {b} of one key overlapped"
    # FIFO: they started in the order they were queued.
    assert sorted(ids, key=lambda i: runs[i]["start"]) == ids


def test_different_keys_run_in_parallel(home):
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    home.start_worker()
    home.start_worker()
    ids = [home.trigger("app", "--branch", b) for b in ("main", "develop")]
    wait_started(trace, ids)  # both at once: neither ends before the gate opens
    gate.touch()
    assert [r["status"] for r in home.wait_for(ids)] == ["success"] * 2
    runs = intervals(trace)
    assert overlaps(runs[ids[0]], runs[ids[1]])


def test_slots_1_serialises_everything(home):
    home.configure(slots=1)
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    home.start_worker()
    home.start_worker()
    ids = [home.trigger("app", "--branch", f"b{i}") for i in range(4)]
    wait_started(trace, ids[:1])
    assert statuses(home) == ["running", "queued", "queued", "queued"]
    gate.touch()
    assert {r["status"] for r in home.wait_for(ids)} == {"success"}
    assert max_concurrency(intervals(trace)) == 1


def test_slots_2_runs_two_and_the_third_waits(home):
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    home.start_worker(workers=3)
    home.start_worker(workers=3)
    ids = [home.trigger("app", "--branch", f"b{i}") for i in range(3)]
    wait_started(trace, ids[:2])
    state = home.cli("status", "--json").stdout
    assert '"slots_used": 2' in state
    assert statuses(home) == ["running", "running", "queued"]
    gate.touch()
    home.wait_for(ids)
    runs = intervals(trace)
    assert max_concurrency(runs) == 2
    assert runs[ids[2]]["start"] >= min(runs[ids[0]]["end"], runs[ids[1]]["end"])


def test_raising_slots_in_lightci_toml_applies_without_a_restart(home):
    home.configure(slots=0)  # paused
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    home.start_worker(workers=3)
    ids = [home.trigger("app", "--branch", f"b{i}") for i in range(3)]
    wait_until(lambda: home.pending_wakeups() == 0, "the workers to take the wake-ups")
    assert statuses(home) == ["queued"] * 3
    home.configure(slots=3)
    home.trigger("app", "--branch", "wake-up")  # any trigger wakes the workers
    wait_started(trace, ids)
    gate.touch()
    home.wait_for(ids)
    assert max_concurrency({i: r for i, r in intervals(trace).items() if i in ids}) == 3


def test_fifo_within_a_key_with_many_workers(home):
    home.configure(slots=4)
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    for _ in range(2):
        home.start_worker(workers=3)
    ids = [home.trigger("app", "--branch", "main") for _ in range(8)]
    wait_started(trace, ids[:1])  # the other seven queue up behind the first
    gate.touch()
    home.wait_for(ids)
    runs = intervals(trace)
    assert sorted(ids, key=lambda i: runs[i]["start"]) == ids


def test_the_database_itself_refuses_two_running_builds_of_one_key(home):
    home.job("hello", build="true\n")
    a, b = home.trigger("hello"), home.trigger("hello")
    with home.db() as conn:
        conn.execute("UPDATE build SET status = 'running' WHERE id = ?", (a,))
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE build SET status = 'running' WHERE id = ?", (b,))


GRANDCHILD = """
( sleep 600 & echo $! > "$PIDFILE"; wait ) &
sleep 600
"""


def test_timeout_kills_the_whole_process_group(home):
    pidfile = home.path / "grandchild.pid"
    home.job("slow", f'timeout = 2\n[env]\nPIDFILE = "{pidfile}"\n', build=GRANDCHILD)
    home.start_worker()
    build_id = home.trigger("slow")
    grandchild = int(wait_for_file(pidfile))
    row = home.wait_for([build_id])[0]
    assert row["status"] == "timeout"
    assert row["error"] == "timeout after 2 s"
    assert wait_gone(grandchild)


def test_cancel_kills_grandchildren_and_frees_the_key(home):
    pidfile = home.path / "grandchild.pid"
    home.job("slow", f'[env]\nPIDFILE = "{pidfile}"\n', build=GRANDCHILD)
    home.start_worker()
    build_id = home.trigger("slow")
    next_id = home.trigger("slow")
    grandchild = int(wait_for_file(pidfile))
    out = home.cli("cancel", str(build_id)).stdout
    assert "worker will stop it" in out
    row = home.wait_for([build_id])[0]
    assert (row["status"], row["error"]) == ("cancelled", "cancelled by user")
    assert wait_gone(grandchild)
    # The key is free again: the next build of it starts.
    home.wait_for([next_id], states={"running"})
    home.cli("cancel", str(next_id))
    home.wait_for([next_id])


def test_cancelling_a_queued_build_ends_it_at_once(home):
    home.job("hello", build="true\n")
    build_id = home.trigger("hello")
    home.cli("cancel", str(build_id))
    assert home.build(build_id)["status"] == "cancelled"
    again = home.cli("cancel", str(build_id), check=False)
    assert again.returncode == 2 and "already ended" in again.stderr


def test_secrets_never_appear_in_a_log(home):
    home.path.joinpath("secrets.env").write_text("API_TOKEN=s3cr3t-t0ken-value\n")
    home.job(
        "leaky",
        'secrets = ["API_TOKEN"]\n',
        build="""
        echo "plain: $API_TOKEN"
        echo "in a sentence: token=${API_TOKEN}."
        echo -n "$API_TOKEN" | base64
        echo "$API_TOKEN" | base64
        printf 'x%s' "$API_TOKEN" | base64
        >&2 echo "stderr: $API_TOKEN"
        """,
    )
    home.start_worker()
    build_id = home.trigger("leaky")
    assert home.wait_for([build_id])[0]["status"] == "success"
    log = home.log(build_id)
    assert "s3cr3t-t0ken-value" not in log
    raw = b"s3cr3t-t0ken-value"
    for variant in (raw, raw + b"\n", b"x" + raw):
        encoded = base64.b64encode(variant).decode()
        assert encoded[4:-4] not in log, f"base64 of the secret leaked: {encoded}"
    assert log.count("***") >= 5


def test_multi_line_secrets_are_masked_line_by_line():
    from lightci.logs import Masker

    secret = "-----BEGIN KEY-----\nMIIEsecretline1\nMIIEsecretline2\n-----END KEY-----"
    mask = Masker([secret])
    assert "MIIEsecretline1" not in mask("cat key:\nMIIEsecretline1\n")
    assert "MIIEsecretline2" not in mask(" MIIEsecretline2 ")
    assert mask("nothing secret here") == "nothing secret here"


def test_two_builds_never_share_home_or_pub_cache(home):
    home.configure(slots=4)
    home.job(
        "iso",
        'key = "{branch}"\ncache = "key"\n',
        build='echo "HOME=$HOME"; echo "PUB_CACHE=$PUB_CACHE"; echo "TMPDIR=$TMPDIR"\n'
        'touch "$HOME/mine-$LIGHTCI_BUILD_ID"; ls "$HOME"\n',
    )
    home.start_worker(workers=4)
    ids = [home.trigger("iso", "--branch", b) for b in ("main", "develop", "main")]
    home.wait_for(ids)

    def env_of(i):
        lines = [ln for ln in home.log(i).splitlines() if "=" in ln and ln[:1].isupper()]
        return dict(ln.split("=", 1) for ln in lines)

    envs = {i: env_of(i) for i in ids}
    homes = {e["HOME"] for e in envs.values()}
    assert len(homes) == 3
    assert envs[ids[0]]["PUB_CACHE"] != envs[ids[1]]["PUB_CACHE"]  # other key, other cache
    assert envs[ids[0]]["PUB_CACHE"] == envs[ids[2]]["PUB_CACHE"]  # same key shares (serially)
    for i in ids:
        assert home.log(i).count("mine-") == 1  # each HOME held only its own file


def test_a_hostile_branch_name_runs_nothing(home, tmp_path):
    home.job("hello", build='echo "branch is $LIGHTCI_BRANCH"\n')
    home.start_worker()
    for branch in ("x$(touch PWNED)", "x`touch PWNED`", "x;touch PWNED"):
        build_id = home.trigger("hello", "--branch", branch)
        assert home.wait_for([build_id])[0]["status"] == "success"
        assert f"branch is {branch}" in home.log(build_id)
    found = subprocess.run(
        ["find", str(tmp_path), "/tmp", "-maxdepth", "4", "-name", "PWNED"],
        capture_output=True,
        text=True,
    ).stdout
    assert "PWNED" not in found


def test_a_broken_job_toml_gives_a_clear_error(home):
    d = home.job("broken", "timeout = 'soon'\n", build="true\n")
    result = home.cli("trigger", "broken", check=False)
    assert result.returncode == 2
    assert f"{d / 'job.toml'}: timeout: must be a positive number of seconds" in result.stderr
    d.joinpath("job.toml").write_text("stage = ['build']\n")
    result = home.cli("trigger", "broken", check=False)
    assert "stage: unknown key (did you mean 'stages'?)" in result.stderr
    d.joinpath("job.toml").write_text("key = '{flavour}'\n[params]\nflavor = 'dev'\n")
    assert "unknown field {flavour}" in home.cli("trigger", "broken", check=False).stderr
    d.joinpath("job.toml").write_text("[params\n")
    assert "not valid TOML" in home.cli("trigger", "broken", check=False).stderr
    assert "BROKEN" in home.cli("jobs").stdout
    assert home.builds() == []


def test_an_unknown_param_names_the_known_ones(home):
    traced_job(home)
    result = home.cli("trigger", "app", "-p", "flavour=prod", check=False)
    assert result.returncode == 2
    assert "no param(s) flavour (known params: flavor)" in result.stderr


def test_a_stage_falls_back_to_jobs_shared(home):
    shared = home.jobs / "_shared"
    shared.mkdir()
    shared.joinpath("notify.sh").write_text('echo "shared notify for $LIGHTCI_JOB"\n')
    home.job("app", 'stages = ["build", "notify"]\n', build="echo own build\n")
    home.start_worker()
    build_id = home.trigger("app")
    assert home.wait_for([build_id])[0]["status"] == "success"
    log = home.log(build_id)
    assert "own build" in log and "shared notify for app" in log


def _git(*args, cwd):
    subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        },
    )


def test_a_second_build_of_a_repo_job_reuses_the_mirror(home, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _git("init", "-q", "-b", "main", cwd=src)
    src.joinpath("app.txt").write_text("v1\n")
    _git("add", ".", cwd=src)
    _git("commit", "-qm", "v1", cwd=src)
    bare = tmp_path / "app.git"
    _git("clone", "-q", "--bare", str(src), str(bare), cwd=tmp_path)
    home.job("repo", f'repo = "{bare}"\n', build='cat app.txt; echo "commit $LIGHTCI_COMMIT"\n')
    home.start_worker()
    first = home.trigger("repo", "--branch", "main")
    assert home.wait_for([first])[0]["status"] == "success", home.log(first)
    assert "cloning" in home.log(first) and "v1" in home.log(first)
    mirror = home.path / "mirrors" / "repo.git"
    inode = mirror.stat().st_ino
    src.joinpath("app.txt").write_text("v2\n")
    _git("commit", "-qam", "v2", cwd=src)
    _git("push", "-q", str(bare), "main", cwd=src)
    second = home.trigger("repo", "--branch", "main")
    row = home.wait_for([second])[0]
    assert row["status"] == "success", home.log(second)
    log = home.log(second)
    assert "fetching" in log and "cloning" not in log and "v2" in log
    assert mirror.stat().st_ino == inode
    assert len(row["commit"]) == 40 and f"commit {row['commit']}" in log
    bad = home.trigger("repo", "--branch", "no-such-branch")
    row = home.wait_for([bad])[0]
    assert row["status"] == "failed" and "'no-such-branch' not found" in row["error"]


def test_supersede_running_cancels_older_builds_of_the_key(home):
    home.job("ci", 'supersede = "running"\n', build="sleep 30\n")
    home.start_worker()
    first = home.trigger("ci", "--branch", "feature")
    home.wait_for([first], states={"running"})
    second = home.trigger("ci", "--branch", "feature")
    third = home.trigger("ci", "--branch", "feature")
    rows = home.wait_for([first, second])
    assert rows[0]["status"] == "cancelled" and rows[0]["error"] == "superseded by #2"
    assert rows[1]["status"] == "cancelled" and rows[1]["error"] == "superseded by #3"
    home.wait_for([third], states={"running"})
    home.cli("cancel", str(third))
    home.wait_for([third])


def test_supersede_none_keeps_every_build_of_a_key(home):
    gate = home.path / "gate"
    home.job("deploy", "", build=f'while [ ! -e "{gate}" ]; do sleep 0.02; done\n')
    home.start_worker()
    first = home.trigger("deploy")
    home.wait_for([first], states={"running"})
    ids = [first] + [home.trigger("deploy") for _ in range(2)]  # they arrive while it runs
    gate.touch()
    assert [r["status"] for r in home.wait_for(ids)] == ["success"] * 3


def test_trigger_wait_shows_the_queue_then_the_log_and_exits_by_result(home):
    home.configure(slots=1)
    gate = home.path / "gate"
    home.job("slow", "", build=f'while [ ! -e "{gate}" ]; do sleep 0.02; done\n')
    home.job("ok", "", build="echo all good\n")
    home.job("bad", "", build="echo failing; exit 3\n")
    home.start_worker()
    home.wait_for([home.trigger("slow")], states={"running"})
    stderr = home.path / "wait.err"
    with stderr.open("w") as err:
        waiting = subprocess.Popen(
            [str(BIN / "lightci"), "trigger", "ok", "--wait"],
            env=home.env,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    home.procs.append(waiting)
    wait_until(
        lambda: "waiting: position 1, slots 1/1 in use, " in stderr.read_text(),
        "trigger --wait to show the queue position",
    )
    gate.touch()
    stdout, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, stderr.read_text()
    assert stdout.splitlines()[0].isdigit()
    assert "all good" in stdout
    failed = home.cli("trigger", "bad", "--wait", check=False)
    assert failed.returncode == 1 and "stage build exited 3" in failed.stderr
    home.configure(slots=0)
    queued = int(home.cli("trigger", "ok").stdout.split()[0])
    home.cli("cancel", str(queued))
    assert home.cli("retry", str(queued)).returncode == 0


def test_show_json_and_status(home):
    home.job("hello", "", build="echo hi\n")
    home.start_worker()
    build_id = home.trigger("hello", "--branch", "main", "--commit", "abc123")
    home.wait_for([build_id])
    import json

    shown = json.loads(home.cli("show", str(build_id), "--json").stdout)
    for field in (
        "id",
        "job",
        "number",
        "key",
        "status",
        "branch",
        "commit",
        "params",
        "trigger",
        "queued_at",
        "started_at",
        "finished_at",
        "duration",
        "exit_code",
        "stage",
        "worker",
        "error",
    ):
        assert field in shown
    assert shown["status"] == "success" and shown["key"] == "hello:main"
    assert "hi" in home.cli("log", str(build_id)).stdout
    assert home.cli("show", "999", check=False).returncode == 2


def test_a_sigkilled_worker_is_noticed_by_its_sibling_without_the_scheduler(home):
    pidfile = home.path / "grandchild.pid"
    home.job("slow", f'[env]\nPIDFILE = "{pidfile}"\n', build=GRANDCHILD)
    first = home.start_worker()
    doomed = home.trigger("slow", "--branch", "main")
    home.wait_for([doomed], states={"running"})
    grandchild = int(wait_for_file(pidfile))
    assert home.build(doomed)["pid"] == first.pid
    sibling = home.start_worker()
    # Its wake-up pipe is made after its start-up (and its sweeper's start): it is up.
    pipe = home.path / "run" / "wake" / f"{socket.gethostname()}-{sibling.pid}.fifo"
    wait_until(pipe.exists, "the sibling worker to start")
    first.kill()
    first.wait()
    row = home.wait_for([doomed], timeout=30)[0]
    assert row["status"] == "lost"
    assert f"worker {first.pid} on host" in row["error"]
    assert wait_gone(grandchild)
    # The key and the slot are free: the survivor runs the next build of that key.
    pidfile.unlink()
    home.job("slow", f'[env]\nPIDFILE = "{pidfile}"\n', build="echo survived\n")
    after = home.trigger("slow", "--branch", "main")
    assert home.wait_for([after])[0]["status"] == "success"


def test_a_stage_that_reads_stdin_gets_nothing(home):
    """Stages have no input: stdin is /dev/null itself, not a pipe carrying some text."""
    home.job("reader", "", build='printf "stdin:[%s]\\n" "$(cat)"\n')
    home.start_worker()
    build = home.trigger("reader")
    assert home.wait_for([build])[0]["status"] == "success"
    assert "stdin:[]" in home.log(build)
