"""The HTML pages, rendered by the app in this process: what a person sees and can do.

Dashboard, job page (history, duration trend, trigger form) and build page;
the login cookie and CSRF on every form; user-controlled strings escaped;
nothing fetched from outside the server.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

import pytest

TOKEN = "page-token-for-tests"
EVIL = '<script>alert("x")</script>'


@pytest.fixture
def jobs(home):
    home.job(
        "app",
        """
        description = "Android & iOS <builds>"
        branches = ["main", "release/*"]
        [params]
        flavor = "dev"
        platform = "android"
        """,
        build="echo hi\n",
    )
    home.job("lib", "", build="true\n")
    return home


def csrf(web) -> str:
    """The CSRF token the pages' forms carry, read from a page as a browser has it."""
    for path in ("/login", "/", "/jobs/app"):
        found = re.search(r'name="csrf" value="([^"]+)"', web.get(path).text)
        if found:
            return found.group(1)
    raise AssertionError("no page has a form")


def form(web, path, **fields):
    body = urlencode({"csrf": csrf(web), **fields})
    return web.post(path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


def api_trigger(web, job="app", **body):
    return web.post(f"/api/jobs/{job}/builds", json_body=body).json()["id"]


def finish(home, build_id, status, seconds=2.0, error=""):
    """Write a build's end into the table as a worker would have."""
    with home.db() as conn:
        conn.execute(
            "UPDATE build SET status = ?, started_at = queued_at + 1, "
            "finished_at = queued_at + 1 + ?, error = ? WHERE id = ?",
            (status, seconds, error, build_id),
        )


def test_the_dashboard_shows_every_job_with_its_last_build_slots_and_queue(web, jobs):
    first = api_trigger(web, branch="main")
    finish(jobs, first, "failed", error="stage build exited 1")
    api_trigger(web, branch="release/2.0", commit="deadbeefcafe1234")
    answer = web.get("/")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert 'href="/jobs/app"' in html and 'href="/jobs/lib"' in html
    assert "never built" in html  # lib
    assert "release/2.0" in html and "deadbeef" in html
    assert 'id="slots">0/2<' in html
    queued = html.split("<h2>Queued</h2>", 1)[1]
    assert "app #2" in queued and "waiting" in queued
    assert "Android &amp; iOS &lt;builds&gt;" in html


def test_a_broken_job_shows_on_the_dashboard_with_its_error(web, jobs):
    jobs.job("broken", "timeout = -1\n", build="true\n")
    html = web.get("/").text
    assert "broken" in html and "must be a positive number of seconds" in html


def test_the_job_page_has_history_a_trend_chart_and_a_prefilled_form(web, jobs):
    ids = [api_trigger(web, branch="main", params={"flavor": f"f{i}"}) for i in range(3)]
    for i, build_id in enumerate(ids[:2]):
        finish(jobs, build_id, ["success", "failed"][i], seconds=10 + i * 20)
    html = web.get("/jobs/app").text
    for build_id in ids:
        assert f'href="/builds/{build_id}"' in html
    assert "flavor=f1 platform=android" in html
    assert len(re.findall(r'<rect class="bar (success|failed)"', html)) == 2  # finished ones
    assert 'name="param.flavor" value="dev"' in html
    assert 'name="param.platform" value="android"' in html
    assert 'name="csrf" value="' in html
    assert "3 builds" in html
    assert "/hooks/app" in html and "no secret set" in html


def test_the_job_page_pages_through_a_long_history(web, jobs):
    ids = [api_trigger(web, job="lib") for _ in range(55)]
    html = web.get("/jobs/lib").text
    assert f"before={ids[5]}" in html  # the 50th newest
    older = web.get(f"/jobs/lib?before={ids[5]}").text
    assert f'href="/builds/{ids[0]}"' in older and f'href="/builds/{ids[6]}"' not in older
    assert "Older builds" not in older and "Newest builds" in older


def test_exactly_a_page_of_history_has_no_link_to_an_empty_older_page(web, jobs):
    for _ in range(50):
        api_trigger(web, job="lib")
    assert "Older builds" not in web.get("/jobs/lib").text
    assert "No older builds." in web.get("/jobs/lib?before=1").text


def test_the_build_page_has_metadata_stages_log_and_the_right_button(web, jobs):
    queued = api_trigger(web, branch="main", params={"flavor": "qa"})
    html = web.get(f"/builds/{queued}").text
    assert "app #1" in html and "qa" in html and "1 in the queue" in html
    assert 'id="cancel-form"' in html and 'id="cancel-form" hidden' not in html
    assert 'id="retry-form" hidden' in html
    assert f'data-build="{queued}"' in html and "/static/build.js" in html
    assert f'href="/api/builds/{queued}/log"' in html  # the raw log, for huge ones
    finish(jobs, queued, "success")
    with jobs.db() as conn:
        conn.execute(
            "INSERT INTO stage (build_id, name, position, started_at, finished_at, exit_code) "
            "VALUES (?, 'compile', 0, 1, 4.5, 0)",
            (queued,),
        )
    html = web.get(f"/builds/{queued}").text
    assert 'id="cancel-form" hidden' in html and 'id="retry-form" hidden' not in html
    assert "compile" in html and "3.5 s" in html


def test_user_controlled_strings_are_escaped_everywhere(web, jobs):
    build_id = api_trigger(web, branch=EVIL, params={"flavor": EVIL, "platform": '"><img src=x>'})
    finish(jobs, build_id, "failed", error=EVIL)
    for path in ("/", "/jobs/app", f"/builds/{build_id}"):
        html = web.get(path).text
        assert "<script>alert" not in html, path
        assert "<img src=x>" not in html, path
        assert (
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html or "&lt;script&gt;" in html
        )
    # The form shows the rejected values back, escaped too.
    answer = form(web, "/jobs/app/trigger", branch=EVIL + "\x01", **{"param.flavor": EVIL})
    assert answer.status == 400
    assert "printable" in answer.text and "<script>alert" not in answer.text


def test_pages_fetch_nothing_from_other_hosts(web, jobs):
    build_id = api_trigger(web)
    for path in ("/", "/jobs/app", f"/builds/{build_id}", "/login"):
        html = web.get(path).text
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert url.startswith("/"), (path, url)
    for asset in ("style.css", "app.js", "build.js", "favicon.svg"):
        answer = web.get(f"/static/{asset}")
        assert answer.status == 200 and b"http://" not in answer.body.replace(
            b"http://www.w3.org", b""
        )
    assert web.get("/static/../web.py").status in (403, 404)


def test_triggering_from_the_form_without_a_token_needs_only_csrf(web, jobs):
    answer = form(web, "/jobs/app/trigger", branch="main", **{"param.flavor": "prod"})
    assert answer.status == 303
    build_id = int(answer.headers["location"].rsplit("/", 1)[1])
    row = jobs.build(build_id)
    assert (row["branch"], row["trigger"], row["params"]) == (
        "main",
        "web",
        '{"flavor": "prod", "platform": "android"}',
    )
    body = urlencode({"branch": "main"})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert web.post("/jobs/app/trigger", body=body, headers=headers).status == 403
    forged = urlencode({"branch": "main", "csrf": "guess"})
    assert web.post("/jobs/app/trigger", body=forged, headers=headers).status == 403
    assert len(jobs.builds()) == 1


def test_a_token_needs_a_login_once_then_forms_work(web, jobs, monkeypatch):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    html = web.get("/jobs/app").text
    assert "Log in to trigger builds" in html and 'id="trigger-form"' not in html
    refused = form(web, "/jobs/app/trigger", branch="main")
    assert refused.status == 303 and refused.headers["location"].endswith(
        "/login?next=%2Fjobs%2Fapp"
    )
    wrong = form(web, "/login", token="nope", next="/jobs/app")
    assert wrong.status == 401 and "not the token" in wrong.text
    assert "lightci_session" not in web.cookies
    ok = form(web, "/login", token=TOKEN, next="/jobs/app")
    assert ok.status == 303 and ok.headers["location"].endswith("/jobs/app")
    assert "lightci_session" in web.cookies
    assert 'id="trigger-form"' in web.get("/jobs/app").text
    created = form(web, "/jobs/app/trigger", branch="main")
    assert created.status == 303
    build_id = int(created.headers["location"].rsplit("/", 1)[1])
    assert form(web, f"/builds/{build_id}/cancel").status == 303
    assert jobs.build(build_id)["status"] == "cancelled"
    retried = form(web, f"/builds/{build_id}/retry")
    assert retried.status == 303 and jobs.build(build_id + 1)["retry_of"] == build_id
    # The API takes the cookie too, but only with the CSRF token in a header.
    assert web.post(f"/api/builds/{build_id}/retry").status == 403
    headers = {"X-CSRF-Token": csrf(web)}
    assert web.post(f"/api/builds/{build_id}/retry", headers=headers).status == 201
    assert form(web, "/logout").status == 303
    assert "lightci_session" not in web.cookies
    assert form(web, "/jobs/app/trigger", branch="main").status == 303
    assert len(jobs.builds()) == 3


def test_a_login_never_redirects_off_the_server(web, jobs, monkeypatch):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        answer = form(web, "/login", token=TOKEN, next=target)
        assert answer.status == 303
        assert answer.headers["location"] in ("http://127.0.0.1/", "/"), target


def test_a_private_server_sends_pages_to_the_login(web, jobs, monkeypatch):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    monkeypatch.setenv("LIGHTCI_SERVER_PUBLIC", "false")
    for path in ("/", "/jobs/app"):
        answer = web.get(path)
        assert answer.status == 303 and "/login?next=" in answer.headers["location"]
    form(web, "/login", token=TOKEN, next="/")
    assert web.get("/").status == 200


def test_unknown_pages_and_builds_get_a_readable_404(web, jobs):
    for path in ("/builds/999", "/jobs/nope", "/no/such/page"):
        answer = web.get(path)
        assert answer.status == 404, path
        assert answer.headers["content-type"].startswith("text/html")
        assert "Back to the dashboard" in answer.text


def test_the_dashboard_renders_running_builds_with_their_stage(web, jobs):
    build_id = api_trigger(web, branch="main")
    with jobs.db() as conn:
        conn.execute(
            "UPDATE build SET status='running', started_at=?, stage='compile', pid=4711, "
            "host='vps1', heartbeat_at=? WHERE id=?",
            (time.time() - 75, time.time(), build_id),
        )
    html = web.get("/").text
    running = html.split("<h2>Running</h2>", 1)[1].split("<h2>Queued</h2>", 1)[0]
    assert "app #1" in running and "compile" in running and "1 min 15 s" in running
    assert 'id="slots">1/2<' in html
