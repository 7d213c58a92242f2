"""The JSON API of SPEC section 7: every route, its answers and its status codes.

Most cases call the Bottle app in this process (builds stay queued: no worker
runs); the live ones (a build's log followed over Server-Sent Events, /metrics
after real builds) go through `lightci serve` over loopback.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOKEN = "t0ken-for-the-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def jobs(home):
    home.job(
        "app",
        """
        description = "the app"
        repo = "https://deploy:hunter2@git.example.com/org/app.git"
        key = "{flavor}_{branch}"
        webhook_secret = "never-shown"
        [params]
        flavor = "dev"
        [env]
        API_URL = "https://api.example.com"
        """,
        build="echo hi\n",
    )
    home.job("lib", "", build="echo lib\n")
    return home


def trigger(web, job="app", headers=None, **body):
    return web.post(f"/api/jobs/{job}/builds", json_body=body, headers=headers)


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
    assert app["repo"] == "https://git.example.com/org/app.git"
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


# -- live, over loopback ------------------------------------------------------------


def read_events(url: str, path: str, until: float = 60):
    """A minimal SSE client on a raw socket: yields (event, data) until the stream ends."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=until)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    sock.sendall(request.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, raw = buf.split(b"\r\n\r\n", 1)
    assert b" 200 " in head.split(b"\r\n")[0], head
    assert b"text/event-stream" in head and b"chunked" in head.lower()
    text, done = "", False
    with sock:
        while True:
            while b"\r\n" in raw:  # de-chunk what has arrived
                size_line, rest = raw.split(b"\r\n", 1)
                size = int(size_line, 16)
                if size == 0:
                    done = True
                    break
                if len(rest) < size + 2:
                    break
                text += rest[:size].decode()
                raw = rest[size + 2 :]
            while "\n\n" in text:
                block, text = text.split("\n\n", 1)
                lines = [line for line in block.split("\n") if not line.startswith(":")]
                fields = dict(line.split(": ", 1) for line in lines if ": " in line)
                if "event" in fields:
                    yield fields["event"], json.loads(fields["data"])
            if done:
                return
            data = sock.recv(65536)
            if not data:
                return
            raw += data


def test_events_stream_log_lines_and_states_until_the_build_ends(home, serve):
    gate = home.path / "gate"
    home.job(
        "slow",
        "",
        build=f"""
        for i in 1 2 3; do echo "line $i"; printf 'progress\\r50%%\\r100%%\\n'; done
        while [ ! -e "{gate}" ]; do sleep 0.02; done
        """,
    )
    server = serve()
    build_id = server.post("/api/jobs/slow/builds", b"{}").json()["id"]
    events, states, text = [], [], ""
    for kind, data in read_events(server.url, f"/api/builds/{build_id}/events"):
        events.append((kind, data))
        states += [data["status"]] if kind == "state" else []
        text += data["text"] if kind == "log" else ""
        if "running" in states and "line 3" in text:
            gate.touch()  # the build ends only once the stream has shown it running, live
    kinds = [e for e, _ in events]
    assert kinds[0] == "state" and kinds[-1] == "end"
    assert states[-1] == "success"
    assert [line for line in text.splitlines() if line.startswith("line")] == [
        "line 1",
        "line 2",
        "line 3",
    ]
    assert "progress\r50%\r100%" in text  # a carriage return travels inside the JSON
    assert events[-1][1] == {"status": "success"}
    assert text.encode() == server.get(f"/api/builds/{build_id}/log").body
    # Resuming from a byte offset gives the rest only.
    offset = len("".join(text.splitlines(keepends=True)[:2]).encode())
    rest = list(read_events(server.url, f"/api/builds/{build_id}/events?offset={offset}"))
    assert "".join(d["text"] for e, d in rest if e == "log").encode() == text.encode()[offset:]


def test_metrics_histograms_count_finished_builds(home, serve):
    home.job("quick", "", build="true\n")
    server = serve()
    ids = [server.post("/api/jobs/quick/builds", b"{}").json()["id"] for _ in range(3)]
    home.wait_for(ids)
    text = server.get("/metrics").text
    assert 'lightci_builds{state="success"} 3' in text
    assert 'lightci_build_duration_seconds_bucket{le="+Inf"} 3' in text
    assert "lightci_build_duration_seconds_count 3" in text
    assert 'lightci_queue_wait_seconds_bucket{le="+Inf"} 3' in text


def events_environ(build_id: int) -> dict:
    """A bare WSGI request for a build's event stream, read without a server."""
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/api/builds/{build_id}/events",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
    }


def test_an_idle_event_stream_sends_keep_alive_pings(web, jobs, monkeypatch):
    from lightci.web import events
    from lightci.web.app import make_app

    monkeypatch.setattr(events, "SSE_PING", 0.05)
    app = make_app()
    build_id = trigger(web).json()["id"]  # stays queued: no worker in this process
    seen = []

    def start_response(status, headers, exc_info=None):
        seen.append(status)

    environ = events_environ(build_id)
    stream = app(environ, start_response)
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if chunk == b": ping\n\n" or len(chunks) > 50:
            break
    stream.close()  # a client that goes away: the generator's finally runs
    assert seen == ["200 OK"]
    assert chunks[0].startswith(b"retry: 2000\n\nevent: state\n")
    assert chunks[-1] == b": ping\n\n"


def test_the_web_command_and_a_separate_worker_run_builds(home, serve):
    home.job("quick", "", build="echo quick\n")
    server = serve(web=True)
    home.start_worker()
    build_id = server.post("/api/jobs/quick/builds", b"{}").json()["id"]
    [row] = home.wait_for([build_id])
    assert row["status"] == "success"
    assert "quick" in server.get(f"/api/builds/{build_id}/log").text


def test_metrics_histograms_follow_builds_that_finish_out_of_order(web, jobs):
    """The settled part is summed once; builds newer than a queued one are read each time."""

    def finish(build_id, seconds):
        with jobs.db() as conn:
            conn.execute(
                "UPDATE build SET status = 'success', started_at = queued_at + 2, "
                "finished_at = queued_at + 2 + ? WHERE id = ?",
                (seconds, build_id),
            )

    def histogram():
        lines = web.get("/metrics").text.splitlines()
        get = dict(line.rsplit(" ", 1) for line in lines if line.startswith("lightci_build_dur"))
        return (
            int(get["lightci_build_duration_seconds_count"]),
            int(get['lightci_build_duration_seconds_bucket{le="60"}']),
            float(get["lightci_build_duration_seconds_sum"]),
        )

    first, second, third = (trigger(web, branch=b).json()["id"] for b in "abc")
    finish(second, 10)
    finish(third, 100)
    assert histogram() == (2, 1, 110.0)
    assert histogram() == (2, 1, 110.0)  # a second scrape counts nothing twice
    finish(first, 1000)
    assert histogram() == (3, 1, 1110.0)
    fourth = trigger(web, branch="d").json()["id"]
    assert histogram() == (3, 1, 1110.0)
    finish(fourth, 30)
    assert histogram() == (4, 2, 1140.0)
    wait = web.get("/metrics").text
    assert 'lightci_queue_wait_seconds_bucket{le="5"} 4' in wait


def test_live_logs_leave_threads_for_webhooks(web, jobs, monkeypatch):
    """With 4 waitress threads, at most 2 live logs at once: the third gets 503 and Retry-After."""
    from lightci.web import events
    from lightci.web.app import make_app

    app = make_app()
    monkeypatch.setenv("LIGHTCI_SERVER_THREADS", "4")
    build_id = trigger(web).json()["id"]  # stays queued, so its stream stays open

    def open_stream():
        seen = []
        environ = events_environ(build_id)
        body = app(environ, lambda status, headers, exc=None: seen.append(status))
        return seen[0], body

    first, second = open_stream(), open_stream()
    assert first[0] == second[0] == "200 OK"
    status, body = open_stream()
    assert status.startswith("503")
    assert b"raise [server] threads" in b"".join(body)
    first[1].close()  # a viewer leaves: its place is free again
    third = open_stream()
    assert third[0] == "200 OK"
    second[1].close()
    third[1].close()
    assert events._streams.open == 0


text_or_number = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "-1", "0", "1", "1e9", "nan", "%00", "../..", "queued"]),
)


# Header values as WSGI hands them over (latin-1 text for bytes): "\xff" is a byte
# that is not UTF-8, which made Bottle raise (issue 9, item 12).
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
auth_headers = st.dictionaries(
    st.sampled_from(["Authorization", "Sec-Fetch-Site", "X-CSRF-Token", "Cookie"]),
    header_text | st.sampled_from(["Bearer \xff", f"Bearer {TOKEN}\xff", "\xff", "cross-site"]),
    max_size=3,
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(
        ["/api/builds/{}", "/api/builds/{}/log", "/builds/{}", "/api/jobs/{}", "/jobs/{}"]
    ),
    segment=text_or_number,
    query=st.dictionaries(
        st.sampled_from(["job", "status", "key", "limit", "before", "offset"]),
        text_or_number,
        max_size=4,
    ),
    headers=auth_headers,
    token=st.booleans(),
)
def test_fuzzed_reads_never_get_a_5xx(
    web, jobs, monkeypatch, route, segment, query, headers, token
):
    if token:
        monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    else:
        monkeypatch.delenv("LIGHTCI_TOKEN", raising=False)
    path = route.format(quote(segment, safe="")) + "?" + urlencode(query)
    for method, base in (
        ("GET", path),
        ("GET", "/api/builds?" + urlencode(query)),
        ("GET", "/"),
        ("POST", "/api/builds/1/cancel"),
    ):
        answer = web.request(method, base, headers=headers)
        assert answer.status < 500, (base, headers, answer)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(["branch", "commit", "params", "flavor", "x"]), children, max_size=3
            )
        ),
        max_leaves=10,
    )
)
def test_fuzzed_trigger_bodies_never_get_a_5xx_or_a_half_row(web, jobs, body):
    before = len(jobs.builds())
    answer = web.post("/api/jobs/app/builds", body=json.dumps(body).encode())
    assert answer.status in (201, 400), answer
    assert len(jobs.builds()) == before + (answer.status == 201)
