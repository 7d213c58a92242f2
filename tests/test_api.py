"""The JSON API of SPEC section 7: every route, its answers and its status codes.

Most cases call the Bottle app in this process (builds stay queued: no worker
runs); the live ones (a build's log followed over Server-Sent Events, /metrics
after real builds) go through `lightci serve` over loopback.
"""

from __future__ import annotations

import json

import pytest

from tests.api_jobs import (
    AUTH,
    TOKEN,
    jobs_fixture,  # noqa: F401 - the jobs fixture
    trigger,
)


def test_health_is_ok(web):
    answer = web.get("/health")
    assert (answer.status, answer.json()) == (200, {"status": "ok"})


def test_health_is_503_when_the_job_table_is_unusable(web, home):
    with home.db() as conn:  # a botched manual migration
        conn.execute("DROP TABLE stage")
        conn.execute("DROP TABLE build")
    answer = web.get("/health")
    assert answer.status == 503
    assert answer.json()["status"] == "unavailable"
    assert "no such table: build" in answer.json()["error"]


def test_jobs_list_and_one_job_show_settings_but_never_secrets(web, jobs):
    answer = web.get("/api/jobs")
    assert answer.status == 200
    listed = {j["name"]: j for j in answer.json()["jobs"]}
    assert set(listed) == {"app", "lib"}
    app = web.get("/api/jobs/app").json()
    assert app["params"] == {"flavor": "dev"}
    assert app["key"] == "{flavor}_{branch}"
    assert app["webhook"] == "/hooks/app" and app["webhook_secret_set"] is True
    assert app["repo"] == "https://***@git.example.com/org/app.git"  # never its user:password
    assert app["env"] == ["API_URL"]
    assert "never-shown" not in json.dumps(app) and "hunter2" not in json.dumps(app)
    assert app["last_build"] is None
    build_id = trigger(web).json()["id"]
    assert web.get("/api/jobs/app").json()["last_build"]["id"] == build_id


def test_a_broken_job_is_listed_with_its_error(web, jobs):
    jobs.job("broken", "stagez = []\n", build="true\n")
    answer = web.get("/api/jobs").json()
    [broken] = answer["broken"]
    assert broken["name"] == "broken" and "did you mean 'stages'" in broken["error"]
    assert web.get("/api/jobs/broken").status == 400


def test_unknown_jobs_and_builds_are_404_and_bad_ids_400(web, jobs):
    assert web.get("/api/jobs/nope").status == 404
    assert "no job 'nope'" in web.get("/api/jobs/nope").json()["error"]
    assert trigger(web, "nope").status == 404
    assert web.get("/api/builds/999").status == 404
    assert web.get("/api/builds/abc").status == 400
    assert web.get("/api/builds/999/log").status == 404
    assert web.post("/api/builds/999/cancel").status == 404
    assert web.post("/api/builds/999/retry").status == 404
    answer = web.get("/api/nothing-here")
    assert answer.status == 404 and "error" in answer.json()
    assert web.request("DELETE", "/api/builds/1").status == 405


def test_trigger_answers_201_with_the_committed_build(web, jobs):
    answer = trigger(web, branch="main", commit="abc123", params={"flavor": "prod"})
    assert answer.status == 201, answer
    build = answer.json()
    for field in (
        "id job number key status branch commit params trigger queued_at started_at "
        "finished_at duration exit_code stage worker error"
    ).split():
        assert field in build
    assert (build["status"], build["key"], build["trigger"]) == ("queued", "app:prod_main", "api")
    assert jobs.build(build["id"])["status"] == "queued"
    empty = web.post("/api/jobs/lib/builds")
    assert empty.status == 201 and empty.json()["params"] == {}


@pytest.mark.parametrize(
    "body, words",
    [
        (b"{nope", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"params": {"color": "red"}}', "no param(s) color"),
        (b'{"params": [1]}', "params must be an object"),
        (b'{"branch": 5}', "branch must be a string"),
        (b'{"branch": "a\\nb"}', "printable"),
        (b'{"flavour": "x"}', "unknown field"),
        (b'{"params": false}', "params must be an object"),
        (b'{"params": 0}', "params must be an object"),
        (b'{"params": ""}', "params must be an object"),
        (b'{"params": []}', "params must be an object"),
        (b'{"params": {"flavor": NaN}}', "not valid JSON"),
        (b'{"params": {"flavor": -Infinity}}', "not valid JSON"),
        (b'{"params": {"flavor": 1e400}}', "not valid JSON"),
        (b'{"commit": "not a sha; rm -rf /"}', "not a hex commit id"),
        (b'{"commit": "abc"}', "not a hex commit id"),
    ],
)
def test_a_bad_trigger_is_400_and_writes_nothing(web, jobs, body, words):
    answer = web.post(
        "/api/jobs/app/builds", body=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 400, answer
    assert words in answer.json()["error"]
    assert jobs.builds() == []


def test_with_a_token_writes_need_it_and_public_reads_stay_open(web, jobs, monkeypatch):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    assert trigger(web).status == 401
    assert "Bearer" in trigger(web).json()["error"]
    assert trigger(web, headers={"Authorization": "Bearer wrong"}).status == 401
    build_id = trigger(web, headers=AUTH).json()["id"]
    assert web.post(f"/api/builds/{build_id}/cancel").status == 401
    assert web.post(f"/api/builds/{build_id}/retry").status == 401
    assert web.post("/api/cleanup", json_body={"dry_run": True}).status == 401
    for path in ("/api/jobs", "/api/builds", f"/api/builds/{build_id}", "/api/status", "/metrics"):
        assert web.get(path).status == 200, path
    assert web.post(f"/api/builds/{build_id}/cancel", headers=AUTH).status == 200


def test_a_private_server_needs_the_token_to_read(web, jobs, monkeypatch):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    monkeypatch.setenv("LIGHTCI_SERVER_PUBLIC", "false")
    build_id = trigger(web, headers=AUTH).json()["id"]
    for path in (
        "/api/jobs",
        "/api/jobs/app",
        "/api/builds",
        f"/api/builds/{build_id}",
        f"/api/builds/{build_id}/log",
        f"/api/builds/{build_id}/events",
        "/api/status",
        "/metrics",
    ):
        assert web.get(path).status == 401, path
    assert web.get("/api/status", headers=AUTH).status == 200
    assert web.get("/health").status == 200  # monitors need no token


def test_a_cross_site_browser_request_cannot_write(web, jobs):
    answer = trigger(web, headers={"Sec-Fetch-Site": "cross-site"})
    assert answer.status == 403
    assert trigger(web, headers={"Sec-Fetch-Site": "same-origin"}).status == 201


def test_with_no_token_a_browser_writes_only_by_a_name_the_server_knows(web, jobs, home):
    """DNS rebinding: a page on attacker.example points its name at 127.0.0.1; the browser
    calls its requests same-origin, and a server with no token ran whatever job it posted."""
    rebound = {"Sec-Fetch-Site": "same-origin", "Host": "attacker.example:8080"}
    answer = web.post("/api/jobs", json_body={"name": "x", "toml": ""}, headers=rebound)
    assert answer.status == 403 and "attacker.example" in answer.json()["error"]
    assert trigger(web, headers=rebound).status == 403
    for host in ("127.0.0.1:8080", "[::1]:8080", "localhost:8080", "ci.localhost"):
        assert trigger(web, headers={**rebound, "Host": host}).status == 201, host
    assert trigger(web, headers={"Host": "attacker.example"}).status == 201  # curl: no browser
    old_safari = {"Origin": "http://attacker.example:8080", "Host": "attacker.example:8080"}
    assert trigger(web, headers=old_safari).status == 403  # no Sec-Fetch-Site, but an Origin
    assert trigger(web, headers={**rebound, "Host": "[evil"}).status == 403  # not a 500
    with home.path.joinpath("lightci.toml").open("a") as f:
        f.write('[server]\nurl = "https://CI.example.com/"\n')
    assert trigger(web, headers={**rebound, "Host": "ci.example.com"}).status == 201
    assert trigger(web, headers=rebound).status == 403


def test_builds_paginate_newest_first_and_filter(web, jobs):
    ids = [
        trigger(web, branch=f"b{i}", params={"flavor": "qa" if i % 2 else "dev"}).json()["id"]
        for i in range(7)
    ]
    lib = web.post("/api/jobs/lib/builds").json()["id"]
    web.post(f"/api/builds/{ids[0]}/cancel")
    page1 = web.get("/api/builds?job=app&limit=3").json()
    assert [b["id"] for b in page1["builds"]] == ids[::-1][:3]
    page2 = web.get(f"/api/builds?job=app&limit=3&before={page1['next_before']}").json()
    assert [b["id"] for b in page2["builds"]] == ids[::-1][3:6]
    page3 = web.get(f"/api/builds?job=app&limit=3&before={page2['next_before']}").json()
    assert [b["id"] for b in page3["builds"]] == [ids[0]] and page3["next_before"] is None
    assert [b["id"] for b in web.get("/api/builds?job=lib").json()["builds"]] == [lib]
    cancelled = web.get("/api/builds?status=cancelled").json()["builds"]
    assert [b["id"] for b in cancelled] == [ids[0]]
    by_key = web.get("/api/builds?key=app:qa_b3").json()["builds"]
    assert [b["id"] for b in by_key] == [ids[3]]
    assert web.get("/api/builds?status=done").status == 400
    assert web.get("/api/builds?limit=0").status == 400
    assert web.get("/api/builds?limit=x").status == 400
    assert web.get("/api/builds?before=x").status == 400


def test_one_build_has_its_stages_and_queue_position(web, jobs):
    first = trigger(web, branch="a").json()["id"]
    second = trigger(web, branch="b").json()["id"]
    answer = web.get(f"/api/builds/{second}").json()
    assert answer["position"] == 2 and answer["stages"] == []
    assert web.get(f"/api/builds/{first}").json()["position"] == 1


def test_the_log_is_served_from_a_byte_offset(web, jobs):
    build_id = trigger(web).json()["id"]
    empty = web.get(f"/api/builds/{build_id}/log")
    assert (empty.status, empty.body, empty.headers["x-log-size"]) == (200, b"", "0")
    row = jobs.build(build_id)
    log = jobs.path / "builds" / row["job"] / str(row["number"]) / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"line one\nline two\n")
    whole = web.get(f"/api/builds/{build_id}/log")
    assert whole.body == b"line one\nline two\n"
    assert whole.headers["content-type"].startswith("text/plain")
    assert whole.headers["x-content-type-options"] == "nosniff"  # never sniffed into HTML
    part = web.get(f"/api/builds/{build_id}/log?offset=9")
    assert (part.body, part.headers["x-log-start"]) == (b"line two\n", "9")
    tail = web.get(f"/api/builds/{build_id}/log?offset=-4")
    assert (tail.body, tail.headers["x-log-start"]) == (b"two\n", "14")
    past = web.get(f"/api/builds/{build_id}/log?offset=999")
    assert (past.status, past.body) == (200, b"")
    assert web.get(f"/api/builds/{build_id}/log?offset=x").status == 400


def test_cancel_and_retry(web, jobs):
    build_id = trigger(web, branch="main", params={"flavor": "qa"}).json()["id"]
    answer = web.post(f"/api/builds/{build_id}/cancel")
    assert answer.status == 200
    assert (answer.json()["status"], answer.json()["error"]) == ("cancelled", "cancelled by user")
    again = web.post(f"/api/builds/{build_id}/cancel")
    assert again.status == 409 and "already ended" in again.json()["error"]
    retry = web.post(f"/api/builds/{build_id}/retry")
    assert retry.status == 201
    new = retry.json()
    assert (new["retry_of"], new["branch"], new["params"]) == (build_id, "main", {"flavor": "qa"})
    assert new["status"] == "queued"


def test_status_shows_slots_running_and_queued(web, jobs):
    ids = [trigger(web, branch=b).json()["id"] for b in ("x", "y")]
    state = web.get("/api/status").json()
    assert (state["slots"], state["slots_used"], state["running"]) == (2, 0, [])
    assert [(b["id"], b["position"]) for b in state["queued"]] == [(ids[0], 1), (ids[1], 2)]


def test_cleanup_reports_what_it_would_remove(web, jobs):
    answer = web.post("/api/cleanup", json_body={"days": 0, "dry_run": True})
    assert answer.status == 200, answer
    assert answer.json()["dry_run"] is True
    assert web.post("/api/cleanup", json_body={"days": "soon"}).status == 400
    assert web.post("/api/cleanup", json_body={"dry_run": "yes"}).status == 400
    assert web.post("/api/cleanup", body=b"{").status == 400


def test_metrics_count_builds_by_state_in_prometheus_text(web, jobs):
    ids = [trigger(web, branch=b).json()["id"] for b in ("x", "y", "z")]
    web.post(f"/api/builds/{ids[0]}/cancel")
    answer = web.get("/metrics")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert 'lightci_builds{state="queued"} 2' in text
    assert 'lightci_builds{state="cancelled"} 1' in text
    assert "lightci_queue_length 2" in text
    assert "lightci_slots_used 0" in text and "lightci_slots 2" in text
    assert "# TYPE lightci_queue_wait_seconds histogram" in text
    assert 'lightci_build_duration_seconds_bucket{le="+Inf"} 0' in text


def test_a_body_over_the_cap_is_413(web, jobs, monkeypatch):
    monkeypatch.setenv("LIGHTCI_SERVER_MAX_BODY", "1000")
    body = json.dumps({"branch": "x" * 2000}).encode()
    answer = web.post("/api/jobs/app/builds", body=body)
    assert answer.status == 413 and "cap" in answer.json()["error"]
