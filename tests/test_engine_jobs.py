"""The build engine's jobs: broken settings, params, shared stages, repo mirrors, the CLI.

Real workers on one SQLite home, triggered through the real `lightci` command.
"""

from __future__ import annotations

import os
import subprocess

from tests.conftest import BIN, wait_until
from tests.traces import traced_job


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
