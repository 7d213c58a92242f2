"""Jobs from the API: create, edit and delete them as files under jobs/ (SPEC section 9)."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from lightci import jobfiles, jobs
from lightci.errors import UserError
from tests.conftest import wait_until
from tests.gitrepos import Repo

TOKEN = "s3cret-token-for-jobs"
GATE = "while [ ! -f {gate} ]; do sleep 0.05; done\n"


def private(home) -> None:
    """A server with a token that is not public: every API call needs the token."""
    with open(home.path / "lightci.toml", "a") as f:
        f.write(f'[server]\ntoken = "{TOKEN}"\npublic = false\n')


def call(srv, method: str, path: str, data=None, token: str = TOKEN):
    from tests.conftest import http

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(data).encode() if data is not None else b""
    return http(method, srv.url + path, body, headers=headers)


def on_disk_error(tmp_path, name: str, toml: str, scripts: dict[str, str], jobs_dir) -> str:
    """What the loader says about these files when a person writes them into jobs/<name>."""
    job_dir = tmp_path / "by-hand" / name
    job_dir.mkdir(parents=True)
    job_dir.joinpath("job.toml").write_text(toml)
    for script, text in scripts.items():
        job_dir.joinpath(script).write_text(text)
    with pytest.raises(UserError) as caught:
        jobs.parse(name, job_dir, job_dir.parent / "_shared")
    return str(caught.value).replace(str(job_dir), str(jobs_dir / name))


def test_create_edit_and_delete_a_job_through_the_api_with_the_token(home, serve, tmp_path):
    private(home)
    srv = serve()
    marker = tmp_path / "ran-at-save"
    build = f'#!/bin/sh\ntouch {marker}.$LIGHTCI_BUILD_ID\necho "v1 $GREETING"\n'
    job = {"name": "made", "toml": '[env]\nGREETING = "hi"\n', "scripts": {"build.sh": build}}
    assert call(srv, "POST", "/api/jobs", job, token="").status == 401
    assert call(srv, "POST", "/api/jobs", job, token="wrong").status == 401
    made = call(srv, "POST", "/api/jobs", job)
    assert made.status == 201, made.text
    assert made.json()["stages"] == ["build"] and made.json()["name"] == "made"
    script = home.jobs / "made" / "build.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755 and script.read_text() == build
    assert not list(tmp_path.glob("ran-at-save*"))  # saved, never run
    assert call(srv, "POST", "/api/jobs", job).status == 409
    assert call(srv, "GET", "/api/jobs/made").json()["env"] == ["GREETING"]

    first = home.trigger("made")
    assert home.wait_for([first])[0]["status"] == "success"
    assert "v1 hi" in home.log(first)

    bad = {"toml": 'timeout = "soon"\n', "scripts": {"build.sh": build}}
    refused = call(srv, "PUT", "/api/jobs/made", bad)
    assert refused.status == 400
    assert refused.json()["error"] == on_disk_error(
        tmp_path, "made", bad["toml"], bad["scripts"], home.jobs
    )
    assert jobs.parse("made", home.jobs / "made", home.jobs / "_shared").timeout is None

    changed = call(
        srv,
        "PUT",
        "/api/jobs/made",
        {"toml": 'stages = ["test"]\n', "scripts": {"test.sh": "echo v2 without a #! line\n"}},
    )
    assert changed.status == 200, changed.text
    assert changed.json()["stages"] == ["test"]
    assert sorted(os.listdir(home.jobs / "made")) == ["job.toml", "test.sh"]
    second = home.trigger("made")
    assert home.wait_for([second])[0]["status"] == "success"
    assert "v2" in home.log(second)
    assert call(srv, "PUT", "/api/jobs/nope", {"toml": ""}).status == 404

    gone = call(srv, "DELETE", "/api/jobs/made")
    assert gone.status == 200 and gone.json()["builds"] == 2
    assert not (home.jobs / "made").exists() and not (home.path / "builds" / "made").exists()
    assert home.builds() == []
    assert call(srv, "GET", "/api/jobs/made").status == 404
    assert [p.name for p in home.jobs.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("name", "scripts"),
    [
        ("../escape", {"build.sh": "#!/bin/sh\n"}),
        ("_shared", {"build.sh": "#!/bin/sh\n"}),
        ("new", {"build.sh": "#!/bin/sh\n"}),
        ("a" * 65, {"build.sh": "#!/bin/sh\n"}),
        ("ok", {"../build.sh": "#!/bin/sh\n"}),
        ("ok", {"sub/build.sh": "#!/bin/sh\n"}),
        ("ok", {".hidden.sh": "#!/bin/sh\n"}),
        ("ok", {"job.toml": "#!/bin/sh\n"}),
        ("ok", {"build.py": "#!/bin/sh\n"}),
        ("ok", {"build.sh": 42}),
        ("ok", {"build.sh": "#!/bin/sh\na\0b"}),
        ("ok", ["build.sh"]),
    ],
)
def test_names_and_scripts_from_the_api_are_checked_and_nothing_escapes_jobs(bound, name, scripts):
    from lightci.config import settings

    cfg = settings()
    before = sorted(os.listdir(cfg.jobs_dir))
    with pytest.raises(UserError) as caught:
        jobfiles.create(cfg, name, "", scripts)
    assert caught.value.status == 400
    assert sorted(os.listdir(cfg.jobs_dir)) == before


def test_a_reader_never_sees_half_a_job_while_it_is_rewritten(bound):
    from lightci.config import settings

    cfg = settings()
    versions = [
        ('stages = ["a"]\n[env]\nV = "a"\n', {"a.sh": "#!/bin/sh\necho a\n"}),
        ('stages = ["b"]\n[env]\nV = "b"\n', {"b.sh": "#!/bin/sh\necho b\n"}),
    ]
    jobfiles.create(cfg, "flip", *versions[0])
    done, seen, bad = threading.Event(), set(), []

    def read() -> None:
        while not done.is_set():
            job = jobs.load(cfg, "flip")
            if job.stages != [job.env["V"]]:
                bad.append(job)
            seen.add(job.env["V"])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(150):
            jobfiles.update(cfg, "flip", *versions[i % 2])
        wait_until(lambda: seen == {"a", "b"}, "the reader to see both versions")
    finally:
        done.set()
        reader.join()
    assert bad == []


def test_delete_refuses_while_a_build_runs_and_cancels_it_when_asked(home, serve, tmp_path):
    gate = tmp_path / "gate"
    repo = Repo(tmp_path)
    repo.commit({"README": "x\n"})
    home.job(
        "busy",
        f'repo = "{repo.bare}"\ncache = "job"\n',
        build=f"echo cached > $XDG_CACHE_HOME/mark 2>/dev/null || true\n{GATE.format(gate=gate)}",
    )
    srv = serve()
    first = home.trigger("busy", "--branch", "main")
    wait_until(lambda: home.build(first)["stage"] == "build", "the build to run its stage")
    assert (home.path / "mirrors" / "busy.git").is_dir()
    assert (home.path / "caches" / "busy").is_dir()
    refused = call(srv, "DELETE", "/api/jobs/busy", token="")
    assert refused.status == 409 and "?cancel=1" in refused.json()["error"]
    assert (home.jobs / "busy").is_dir() and home.build(first)["status"] == "running"
    home.trigger("busy", "--branch", "main")  # queued behind it: goes with the job
    gone = call(srv, "DELETE", "/api/jobs/busy?cancel=1", token="")
    assert gone.status == 200, gone.text
    assert gone.json()["builds"] == 2
    assert home.builds() == []
    for path in (
        "jobs/busy",
        "builds/busy",
        "caches/busy",
        "mirrors/busy.git",
        "mirrors/busy.lock",
    ):
        assert not (home.path / path).exists(), path


def test_a_deleted_job_leaves_no_gitops_history_or_learned_numbers(bound, tmp_path):
    """A job made again under a deleted one's name rolled back the old one's release (its
    bumps and GitOps mirror were left) and inherited its memory peaks and durations."""
    from lightci import removal
    from lightci.config import settings
    from lightci.gitops import last_bump
    from lightci.models import Bump, KeyStat, run_sql

    bound.job("go1", "", build="true\n")
    bound.job("go10", "", build="true\n")  # a name the first one is a prefix of
    row = {"repo": "r", "branch": "main", "file": "v.yaml", "created_at": 1.0}
    Bump.create(job="go1", kind="bump", state="pushed", **row)
    for key in ("go1:main", "go10:main"):
        run_sql("INSERT INTO key_stat (key, peak, duration, updated_at) VALUES (?, 1, 2, 3)", key)
    mirror = settings().mirrors_dir / "gitops" / "go1"
    mirror.mkdir(parents=True)
    removal.delete("go1")
    assert last_bump("go1") is None and not mirror.exists()
    assert [k.key for k in KeyStat.select()] == ["go10:main"]


def test_an_edit_keeps_the_job_s_other_files_and_folders(bound):
    """README: other files stay. A folder beside the scripts (files/, a chart) was dropped."""
    from lightci import jobfiles
    from lightci.config import settings

    job = bound.job("kept", "", build="echo v1\n", helper="echo helper\n")
    (job / "Dockerfile").write_text("FROM scratch\n")
    (job / "files" / "deep").mkdir(parents=True)
    (job / "files" / "deep" / "x.txt").write_text("data\n")
    jobfiles.update(settings(), "kept", 'description = "edited"\n', {"build.sh": "echo v2\n"})
    assert (job / "Dockerfile").read_text() == "FROM scratch\n"
    assert (job / "files" / "deep" / "x.txt").read_text() == "data\n"
    assert (job / "build.sh").read_text().endswith("echo v2\n")
    assert not (job / "helper.sh").exists()  # the given scripts are the job's whole set
