"""Input the API once took too kindly: each case here was found by poking a running server.

A typo'd field, an empty value of the wrong type, a number JSON has not, bytes that are
not UTF-8, an id int() would read: each is a 400 that says what is wrong, and writes
nothing. Also: one build reads the same from the API, the CLI and the trigger's answer.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.api_jobs import (
    jobs_fixture,  # noqa: F401 - the jobs fixture
    trigger,
)
from tests.conftest import BIN, wait_until


def test_a_cleanup_with_a_typo_cleans_nothing(web, jobs):
    build_id = trigger(web).json()["id"]
    web.post(f"/api/builds/{build_id}/cancel")
    with jobs.db() as conn:  # old enough for any cleanup
        conn.execute("UPDATE build SET queued_at = 1, finished_at = 2 WHERE id = ?", (build_id,))
    answer = web.post("/api/cleanup", json_body={"days": 0, "dryrun": True})
    assert answer.status == 400 and "'dryrun'" in answer.json()["error"]
    assert "days, dry_run" in answer.json()["error"]
    assert [b["id"] for b in jobs.builds()] == [build_id]


@pytest.mark.parametrize(
    "path",
    [
        "/api/builds?status=%FF",
        "/api/builds?job=%FF%FE",
        "/api/builds?key=%C3",
        "/api/builds?limit=%D9%A3",  # an Arabic-Indic three: int() would take it
        "/api/builds?limit=1_0",
        "/api/builds?limit=+5",
        "/api/builds?before=0",
        "/api/builds?before=-1",
        "/api/deployments?limit=0",
        "/api/deployments?limit=-3",
        "/api/deployments?job=%FF",
    ],
)
def test_query_arguments_that_are_not_what_they_say_are_400(web, jobs, path):
    trigger(web)
    answer = web.get(path)
    assert answer.status == 400, (path, answer)
    assert answer.json()["error"]


def test_a_limit_over_the_most_is_the_most_and_an_unknown_job_s_deployments_are_404(web, jobs):
    """?limit=1000 was a 400; ?job=nope was 200 [] here, but 404 in the CLI and the metrics."""
    ids = [trigger(web).json()["id"] for _ in range(3)]
    listed = web.get("/api/builds?limit=100000")
    assert listed.status == 200 and [b["id"] for b in listed.json()["builds"]] == ids[::-1]
    assert web.get("/api/deployments?limit=1000").json() == {"deployments": []}
    assert web.get("/api/deployments?job=app").json() == {"deployments": []}
    answer = web.get("/api/deployments?job=nope")
    assert answer.status == 404 and answer.json()["error"] == "no job 'nope'"
    assert web.get("/api/bumps?job=nope").status == 404  # the same rules for every listing
    assert web.get("/api/bumps?limit=0").status == 400
    assert web.get("/api/bumps?limit=5000").json() == {"bumps": []}


def test_a_retried_build_s_answer_says_why_it_waits(web, jobs):
    """The 201 of a retry lacked the queued build's waiting_for and ETAs (SPEC 11)."""
    first = trigger(web).json()["id"]
    retried = web.post(f"/api/builds/{first}/retry")
    assert retried.status == 201
    body = retried.json()
    assert body["retry_of"] == first and body["waiting_for"].startswith("no worker is running")
    assert {"eta_start", "eta_finish", "position"} <= set(body)


@pytest.mark.parametrize("build_id", ["1_0", "+1", "%201", "01a", "1.0"])
def test_a_build_id_is_ascii_digits_only(web, jobs, build_id):
    for _ in range(10):
        trigger(web)
    assert web.get("/api/builds/10").status == 200
    assert web.get(f"/api/builds/{build_id}").status == 400
    assert web.post(f"/api/builds/{build_id}/cancel").status == 400
    assert jobs.build(10)["status"] == "queued"


def test_a_token_made_short_while_serving_lets_nobody_in(web, jobs):
    jobs.path.joinpath("lightci.toml").write_text('[server]\ntoken = "short"\n')
    answer = trigger(web, headers={"Authorization": "Bearer short"})
    assert answer.status == 503
    assert "shorter than 16 characters" in answer.json()["error"]
    assert jobs.builds() == []
    for path in ("/", "/jobs/app", "/login", "/badge/app.svg"):  # pages still read (public)
        assert web.get(path).status == 200, path
    login = web.post(
        "/login", body=b"token=short", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert login.status in (403, 503) and "lightci_session" not in web.cookies


def test_a_webhook_to_a_broken_job_does_not_show_what_is_broken(web, jobs):
    jobs.job("broken", 'secret_thing = "internal-detail"\nthis is = = not toml\n')
    answer = web.post("/hooks/broken", body=b"{}", headers={"X-GitHub-Event": "push"})
    assert answer.status == 400
    assert answer.json()["error"] == "job 'broken' has a broken job.toml: see `lightci jobs`"
    assert web.get("/hooks/nope").status in (404, 405)


def test_one_build_reads_the_same_from_the_api_the_cli_and_its_trigger(web, jobs):
    jobs.configure(slots=0)
    made = trigger(web).json()
    assert made["waiting_for"].startswith("no worker is running: start `lightci worker`")
    assert made["position"] == 1 and made["stages"] == []
    shown = json.loads(jobs.cli("show", str(made["id"]), "--json").stdout)
    api = web.get(f"/api/builds/{made['id']}").json()
    assert shown == api
    assert {k for k in made if k not in ("eta_start", "eta_finish")} <= set(api)


def test_the_queue_position_follows_the_claim_order(web, jobs):
    jobs.configure(slots=0)
    low = trigger(web, branch="a").json()["id"]
    high = trigger(web, branch="b", priority=5).json()["id"]
    middle = trigger(web, branch="c", priority=3).json()["id"]
    behind = trigger(web, branch="a", priority=9).json()["id"]  # key a's older build first
    order = [high, middle, low, behind]
    places = {b: web.get(f"/api/builds/{b}").json()["position"] for b in order}
    assert places == {b: i for i, b in enumerate(order, 1)}
    queued = web.get("/api/status").json()["queued"]
    assert [(b["id"], b["position"]) for b in queued] == list(places.items())


def test_a_build_that_waited_past_starve_after_is_listed_first(web, jobs):
    """The claim takes the starving build first; the list and `position` put priority first."""
    jobs.path.joinpath("lightci.toml").write_text("[builds]\nslots = 0\nstarve_after = 60\n")
    old = trigger(web, branch="old").json()["id"]
    new = trigger(web, branch="new", priority=5).json()["id"]
    assert web.get(f"/api/builds/{new}").json()["position"] == 1  # nobody starves yet
    with jobs.db() as conn:
        conn.execute("UPDATE build SET queued_at = queued_at - 61 WHERE id = ?", (old,))
    queued = web.get("/api/status").json()["queued"]
    assert [(b["id"], b["position"]) for b in queued] == [(old, 1), (new, 2)]
    with jobs.db() as conn:  # past its queue_timeout too: nothing claims it, it goes nowhere
        conn.execute("UPDATE build SET queued_at = queued_at - 600 WHERE id = ?", (old,))
    queued = web.get("/api/status").json()["queued"]
    assert [(b["id"], b["position"]) for b in queued] == [(new, 1), (old, 2)]


@pytest.mark.parametrize("name", ["home", "path", "ci", "lightci_key", "ld_preload", "tmpdir"])
def test_a_param_may_not_take_an_environment_name_lightci_owns(web, jobs, name):
    jobs.job("spoof", f'[params]\n{name} = "x"\n', build="true\n")
    answer = web.get("/api/jobs/spoof")
    assert answer.status == 400
    assert f"would set ${name.upper()}" in answer.json()["error"]
    assert "choose another name" in answer.json()["error"]


def test_the_web_form_refuses_bytes_that_are_not_utf8(web, jobs):
    token = re.search(r'name="csrf" value="([^"]+)"', web.get("/jobs/app").text).group(1)
    answer = web.post(
        "/jobs/app/trigger",
        body=f"csrf={token}&branch=%FF%FE".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 400
    assert "branch is not valid UTF-8" in answer.text
    assert jobs.builds() == []


@pytest.mark.parametrize(
    "branch", ["a..b", "x y", "-x", "a.lock", "a/", "/a", "a//b", "a@{b", "~x"]
)
def test_a_branch_git_would_refuse_is_400_before_any_row(web, jobs, branch):
    answer = trigger(web, job="lib", branch=branch)  # lib has no repo: still a branch name
    assert answer.status == 400
    assert "not a valid git branch name" in answer.json()["error"]
    result = jobs.cli("trigger", "lib", f"--branch={branch}", check=False)
    assert result.returncode == 2 and "not a valid git branch name" in result.stderr
    assert jobs.builds() == []


@pytest.mark.parametrize("typo, meant", [("artifact", "artifacts"), ("notfy", "notify")])
def test_a_typo_of_a_newer_key_gets_the_right_hint(web, jobs, typo, meant):
    jobs.job("typo", f'{typo} = ["x"]\n', build="true\n")
    assert f"did you mean '{meant}'?" in web.get("/api/jobs/typo").json()["error"]


@pytest.mark.parametrize(
    "setting, words",
    [
        ('memory_budget = "0"', 'memory_budget must be a size such as "2G" or "auto" or ""'),
        ("memory_budget = 5", "memory_budget must be a size"),
        ('memory_default = "1K"', "memory_default must be a size"),
        ('memory_reserve = "auto"', 'memory_reserve must be a size such as "2G" or ""'),
        ("starve_after = -5", "starve_after must be 0 or more"),
    ],
)
def test_sizes_no_build_could_fit_are_refused_in_lightci_toml(jobs, setting, words):
    jobs.path.joinpath("lightci.toml").write_text(f"[builds]\n{setting}\n")
    result = jobs.cli("status", check=False)
    assert result.returncode == 2 and words in result.stderr, result.stderr


@pytest.mark.parametrize("size", ["0", "1K", "5"])
def test_a_job_memory_no_build_could_run_in_is_refused(web, jobs, size):
    jobs.job("tiny", f'memory = "{size}"\n', build="true\n")
    assert 'must be a size from "6M"' in web.get("/api/jobs/tiny").json()["error"]


def test_slots_raised_past_the_worker_s_threads_are_logged_once(jobs, bound, caplog, monkeypatch):
    from lightci import worker

    monkeypatch.setattr(worker, "_threads", [4])
    monkeypatch.setattr(worker, "_warned", set())
    jobs.configure(slots=6)
    worker._few_threads()
    worker._few_threads()
    said = [r.getMessage() for r in caplog.records if "--workers 6" in r.getMessage()]
    assert said == [
        "[builds] slots = 6, but this worker runs builds on 4 thread(s): at most 4 at once "
        "here until it restarts (or start it with --workers 6; huey_consumer: -w)"
    ]


def test_a_plain_huey_consumer_says_at_start_that_it_runs_one_build_at_a_time(jobs):
    """SPEC 1's `huey_consumer lightci.tasks.huey` (Huey's default: 1 thread) ran builds one by
    one under slots = 2, and nothing said so: the count was known only to `lightci worker`."""
    proc = jobs.start_worker(str(BIN / "huey_consumer"), "lightci.tasks.huey")
    log = jobs.path / "worker-0.log"
    wanted = "[builds] slots = 2, but this worker runs builds on 1 thread(s)"
    wait_until(lambda: wanted in log.read_text(), "the worker to warn", timeout=30)
    assert proc.poll() is None


def test_a_queue_with_no_worker_says_so_and_a_worker_makes_it_paused(jobs):
    jobs.configure(slots=0)
    jobs.job("lib", "", build="true\n")
    build_id = jobs.trigger("lib")

    def waiting_for() -> str:
        return json.loads(jobs.cli("show", str(build_id), "--json").stdout)["waiting_for"]

    shown = json.loads(jobs.cli("show", str(build_id), "--json").stdout)
    assert shown["waiting_for"] == "no worker is running: start `lightci worker` or `lightci serve`"
    assert shown["eta_start"] is None and shown["eta_finish"] is None  # not "now", for ever
    jobs.start_worker()
    wait_until(lambda: waiting_for() == "paused", "the worker's bell to be heard of")


def test_a_job_s_queued_last_build_says_why_it_waits(web, jobs):
    """SPEC 11: a queued build as JSON gains waiting_for, in /api/jobs too."""
    build_id = trigger(web).json()["id"]
    listed = {j["name"]: j for j in web.get("/api/jobs").json()["jobs"]}
    assert listed["app"]["last_build"]["id"] == build_id
    assert listed["app"]["last_build"]["waiting_for"].startswith("no worker is running")
    assert listed["lib"]["last_build"] is None
    one = web.get("/api/jobs/app").json()["last_build"]
    assert one["waiting_for"].startswith("no worker") and "eta_start" in one


def test_a_build_that_outwaited_its_queue_timeout_has_no_eta(web, jobs):
    """Nothing claims it; it showed an eta_start of "now" until the sweep expired it."""
    build_id = trigger(web).json()["id"]
    with jobs.db() as conn:
        conn.execute("UPDATE build SET queued_at = queued_at - 700 WHERE id = ?", (build_id,))
    shown = web.get(f"/api/builds/{build_id}").json()
    assert (
        shown["waiting_for"]
        == "waited over queue_timeout (600 s): it ends expired at the next sweep"
    )
    assert shown["eta_start"] is None and shown["eta_finish"] is None


def test_a_job_shows_its_schedules_and_what_it_reports_but_no_hook_url(web, jobs):
    jobs.job(
        "nightly",
        'schedule = ["0 3 * * *"]\npull_requests = true\nafter = ["report"]\n'
        'artifacts = ["*.apk"]\n[[notify]]\non = ["failure"]\n'
        'webhook = "https://chat.example.com/hooks/s3cret"\n',
        build="true\n",
        report="true\n",
    )
    shown = web.get("/api/jobs/nightly").json()
    assert shown["schedules"] == [{"cron": "0 3 * * *", "branch": "", "params": {}}]
    assert (shown["pull_requests"], shown["after"], shown["artifacts"]) == (
        True,
        ["report"],
        ["*.apk"],
    )
    assert shown["notify"] == [{"on": ["failure"], "email": 0}]
    assert "s3cret" not in json.dumps(shown)


def test_unknown_jobs_are_404_where_they_were_200_or_503(web, jobs):
    assert web.get("/api/metrics/delivery?job=nosuch").status == 404
    assert web.get("/api/metrics/delivery?job=app").status == 200
    answer = web.get("/apps/nosuch/x")
    assert answer.status == 404 and answer.json()["error"] == "no job 'nosuch'"
    assert web.get("/apps/app/x").status == 503  # a job, with no live deployment
    result = jobs.cli("deployments", "nosuch", check=False)
    assert result.returncode == 2 and "no job 'nosuch'" in result.stderr
    assert jobs.cli("deployments", "app").stdout.strip() == "no deployments of app"


def test_force_unlock_of_a_build_and_all_is_refused_and_a_misnamed_job_is_listed(web, jobs):
    result = jobs.cli("force-unlock", "5", "--all", check=False)
    assert result.returncode == 2 and "a build or --all, not both" in result.stderr
    (jobs.jobs / "bad name").mkdir()
    (jobs.jobs / "_shared").mkdir(exist_ok=True)
    broken = {b["name"]: b["error"] for b in web.get("/api/jobs").json()["broken"]}
    assert list(broken) == ["bad name"] and "rename its directory" in broken["bad name"]
    assert "bad name" in jobs.cli("jobs").stdout


def test_a_build_claimed_while_its_trigger_answers_is_shown_not_a_500(jobs, bound):
    """The API's 201 reads the build back; a worker may claim it in between."""
    from lightci import builds, overview

    jobs.job("lib", "", build="true\n")
    build = builds.trigger("lib")  # as the API holds it: queued
    with jobs.db() as conn:  # a worker's claim, a moment later
        conn.execute("UPDATE build SET status = 'running' WHERE id = ?", (build.id,))
    shown = overview.detail(build)
    assert shown["position"] == 0 and shown["id"] == build.id


def test_errors_say_what_to_do_405_wrong_token_and_a_job_without_a_name(web, jobs):
    """405 said only "Method not allowed."; a wrong token read as a missing one; a job
    posted without a name was "bad job name None"."""
    answer = web.request("DELETE", "/api/status")
    assert answer.status == 405
    assert answer.json()["error"] == "DELETE is not allowed on /api/status: use GET"
    answer = web.post("/api/jobs", json_body={"toml": ""})
    assert answer.status == 400 and answer.json()["error"].startswith("no job name: use letters")
    jobs.path.joinpath("lightci.toml").write_text('[server]\ntoken = "0123456789abcdef-right"\n')
    wrong = trigger(web, headers={"Authorization": "Bearer 0123456789abcdef-wrong"})
    assert wrong.status == 401 and "not this server's" in wrong.json()["error"]
    assert "send Authorization: Bearer" in trigger(web).json()["error"]


def test_an_empty_memory_reserve_holds_nothing_back_and_breaks_nothing(web, jobs):
    """memory_reserve = "" passed the settings' check, then every budget raised: the API
    answered 400 to a trigger it had queued, /api/status was 400, and no claim ran."""
    from lightci import admission
    from lightci.config import settings

    jobs.path.joinpath("lightci.toml").write_text('[builds]\nmemory_reserve = ""\n')
    answer = trigger(web)
    assert answer.status == 201, answer
    assert web.get("/api/status").status == 200
    assert admission.budget(settings()) == admission.machine_memory()
