"""The JSON API live: a build's log followed over Server-Sent Events, /metrics after real
builds, a separate web and worker, the event stream's keep-alives and thread cap.

Some go through `lightci serve` over loopback, some call the Bottle app in this process.
"""

from __future__ import annotations

import json
import socket

from tests.api_jobs import (
    jobs_fixture,  # noqa: F401 - the jobs fixture
    trigger,
)

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
    # A state is the build as GET /api/builds/<id> shows it: a running one's eta_finish too.
    running = next(d for k, d in events if k == "state" and d["status"] == "running")
    assert {"eta_finish", "memory_peak", "stages", "position"} <= set(running)
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
