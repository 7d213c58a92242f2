"""The /apps/<job>/ proxy of `lightci web`, against a plain HTTP server standing in for the app.

The route is the job's live Deployment row, so these tests write that row
themselves: no Docker engine needed.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import free_port


class Echo(BaseHTTPRequestHandler):
    """Answers with what it got; /stream sends one chunk, then two more once the test says."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for n in range(3):
                data = f"data: {n}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                self.server.go_on.wait(30)
            self.wfile.write(b"0\r\n\r\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length).decode(),
            }
        ).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


@pytest.fixture
def echo():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.go_on = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.go_on.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def app_server(echo) -> int:
    return echo.server_address[1]


@pytest.fixture
def web(serve) -> int:
    """`lightci web` alone, on a port of its own."""
    return serve(web=True).port


def route(home, job: str, address: str) -> None:
    """What a switch writes: the job's live deployment and where it listens."""
    with home.db() as conn:
        conn.execute(
            "INSERT INTO deployment (job, image, image_id, slot, container, address, state, "
            "health, tries, last_error, trigger, created_at, switched_at, error) "
            "VALUES (?, 'lightci/x:1', 'sha256:x', 'blue', '', ?, 'live', 'ok', 0, '', 'test', "
            "?, ?, '')",
            (job, address, time.time(), time.time()),
        )


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def test_requests_reach_the_app_with_body_query_and_forwarded_headers(home, web, app_server):
    home.job("shop", build="true\n")
    route(home, "shop", f"127.0.0.1:{app_server}")
    response, raw = request(
        web,
        "POST",
        "/apps/shop/cart/a%2Fb/items?id=7&x=%2F",
        body=b'{"qty": 2}',
        headers={"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.9"},
    )
    assert response.status == 201
    seen = json.loads(raw)
    assert seen["method"] == "POST"
    assert seen["path"] == "/cart/a%2Fb/items?id=7&x=%2F"  # as sent, not decoded
    assert seen["body"] == '{"qty": 2}'
    # A client's own X-Forwarded-For is not trusted (waitress drops it): the peer is the client.
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert seen["headers"]["X-Real-Ip"] == "127.0.0.1"
    assert seen["headers"]["X-Forwarded-Proto"] == "http"
    assert seen["headers"]["X-Forwarded-Host"] == f"127.0.0.1:{web}"
    assert seen["headers"]["X-Forwarded-Prefix"] == "/apps/shop"
    assert response.headers.get_all("Set-Cookie") == ["a=1", "b=2"]

    response, _ = request(web, "GET", "/apps/shop?q=1")
    assert response.status == 308
    assert response.headers["Location"].endswith("/apps/shop/?q=1")


def test_a_streamed_response_arrives_chunk_by_chunk(home, web, echo):
    home.job("events", build="true\n")
    route(home, "events", f"127.0.0.1:{echo.server_address[1]}")
    conn = http.client.HTTPConnection("127.0.0.1", web, timeout=30)
    conn.request("GET", "/apps/events/stream")
    response = conn.getresponse()
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    # The first event arrives while the app holds back the next two.
    first = response.read1(64)
    assert first == b"data: 0\n\n"
    echo.go_on.set()
    rest = response.read()
    assert (first + rest).count(b"data: ") == 3


def test_no_live_deployment_is_503_and_a_dead_app_is_502(home, web):
    home.job("idle", build="true\n")
    response, raw = request(web, "GET", "/apps/idle/")
    assert response.status == 503
    assert json.loads(raw) == {"error": "job 'idle' has no live deployment"}
    route(home, "idle", f"127.0.0.1:{free_port()}")  # nobody listens there
    deadline = time.time() + 10
    while (answer := request(web, "GET", "/apps/idle/"))[0].status == 503:
        assert time.time() < deadline, "the web process never saw the route"
        time.sleep(0.1)  # it caches routes for half a second
    response, raw = answer
    assert response.status == 502
    assert "its container at 127.0.0.1:" in json.loads(raw)["error"]
