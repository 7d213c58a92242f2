"""The /apps/<job>/ proxy of `lightci web`, against a plain HTTP server standing in for the app.

The route is the job's live Deployment row, so these tests write that row
themselves: no Docker engine needed.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
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
        if self.path.startswith("/hostile"):
            self._hostile()
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

    def _hostile(self) -> None:
        """An app that tries to log the admin in as someone else, or out, or take the origin."""
        body = json.dumps({"headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for cookie in (
            "lightci_session=evil; Path=/; HttpOnly",
            "lightci_csrf=known-to-the-app; Path=/",
            "LIGHTCI_SESSION=evil",
            " lightci_session =evil",
            "lightci_session=; Max-Age=0; Path=/",
            "theme=dark; Path=/apps/shop/",
        ):
            self.send_header("Set-Cookie", cookie)
        self.send_header("Clear-Site-Data", '"cookies"')
        self.send_header("Service-Worker-Allowed", "/")
        self.send_header("Connection", "X-App-Hop")
        self.send_header("X-App-Hop", "for this connection only")
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


# A [deploy] section: the scheduler's undeploy_removed (at start, then every minute) stops
# the live deployment of a job without one, which raced the rows route() writes.
DEPLOYED = "[deploy]\nport = 8080\n"


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


def cookies_of(response) -> dict[str, str]:
    return dict(
        c.split(";", 1)[0].strip().split("=", 1)
        for c in response.headers.get_all("Set-Cookie") or []
    )


def login(port: int, token: str, headers=None):
    """The login form as a browser fills it in -> (the POST's answer, the browser's cookies)."""
    headers = headers or {}
    response, page = request(port, "GET", "/login?next=/jobs/hello", headers=headers)
    assert response.status == 200, page
    jar = cookies_of(response)
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
    form = f"csrf={csrf}&token={token}&next=/jobs/hello".encode()
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    response, _ = request(
        port,
        "POST",
        "/login",
        body=form,
        headers={
            **headers,
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": cookie,
        },
    )
    assert response.status == 303
    return response, {**jar, **cookies_of(response)}


def test_requests_reach_the_app_with_body_query_and_forwarded_headers(home, web, app_server):
    home.job("shop", DEPLOYED, build="true\n")
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
    # A client's own X-Forwarded-For is not trusted: the peer is the client.
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
    home.job("events", DEPLOYED, build="true\n")
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
    home.job("idle", DEPLOYED, build="true\n")
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


def test_an_address_that_never_answers_is_502_without_waiting_for_the_read_timeout(home, web):
    """A removed container's address drops the connection attempt: no 5-minute hang."""
    home.job("gone", DEPLOYED, build="true\n")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    filler = socket.create_connection(silent.getsockname())  # the backlog is full from now on
    try:
        route(home, "gone", f"127.0.0.1:{silent.getsockname()[1]}")
        deadline = time.time() + 10
        while (answer := request(web, "GET", "/apps/gone/"))[0].status == 503:
            assert time.time() < deadline, "the web process never saw the route"
            time.sleep(0.1)  # it caches routes for half a second
        response, raw = answer  # request() gives up after 30 s; the proxy's read timeout is 300
        assert response.status == 502
        assert "timed out" in json.loads(raw)["error"]
    finally:
        filler.close()
        silent.close()


TOKEN = "a-token-of-some-length-0123456789"
HOSTILE_REQUEST = {
    "Authorization": f"Bearer {TOKEN}",
    "X-Real-IP": "203.0.113.66",
    "X-Forwarded-For": "203.0.113.66",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "bank.example",
    "X-Forwarded-Prefix": "/elsewhere",
    "Forwarded": "for=203.0.113.66;proto=https",
    "Connection": "keep-alive, X-Hop-Secret",
    "X-Hop-Secret": "for the next hop only",
}


def assert_no_reach_into_lightci(port: int, jar: dict[str, str]) -> None:
    """A request through /apps/shop/ with lightci's login: the app sees none of it."""
    assert {"lightci_session", "lightci_csrf"} <= set(jar)
    cookie = "; ".join(f"{k}={v}" for k, v in {**jar, "theme": "light"}.items())
    response, raw = request(
        port, "GET", "/apps/shop/hostile", headers={**HOSTILE_REQUEST, "Cookie": cookie}
    )
    assert response.status == 200
    seen = {k.lower(): v for k, v in json.loads(raw)["headers"].items()}
    assert seen["cookie"] == "theme=light"
    for name in ("authorization", "forwarded", "x-hop-secret"):
        assert name not in seen, (name, seen)
    assert seen["x-real-ip"] == seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{port}"
    assert seen["x-forwarded-prefix"] == "/apps/shop"
    # Back from the app: its own cookie, none that could set or clear lightci's login.
    assert response.headers.get_all("Set-Cookie") == ["theme=dark; Path=/apps/shop/"]
    for name in ("Clear-Site-Data", "Service-Worker-Allowed", "X-App-Hop"):
        assert response.headers[name] is None, name


def test_an_app_never_acts_as_the_admin_logged_in_to_lightci(home, web, app_server):
    home.job("shop", DEPLOYED, build="true\n")
    route(home, "shop", f"127.0.0.1:{app_server}")
    with open(home.path / "lightci.toml", "a") as toml:
        toml.write(f'[server]\ntoken = "{TOKEN}"\n')
    _, jar = login(web, TOKEN)
    # The login is real: the cookie opens lightci's pages that need it.
    response, _ = request(web, "GET", "/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert_no_reach_into_lightci(web, jar)


def test_apps_have_an_origin_of_their_own(home, serve, app_server):
    """[server] apps_port: /apps/<job>/ on its own port, with nothing of lightci's behind it."""
    home.job("shop", DEPLOYED, build="true\n")
    apps_port = free_port()
    server = serve(env={"LIGHTCI_SERVER_APPS_PORT": str(apps_port), "LIGHTCI_TOKEN": TOKEN})
    route(home, "shop", f"127.0.0.1:{app_server}")
    _, jar = login(server.port, TOKEN)
    # Cookies are per host, not per port: the browser sends lightci's to the apps' port too.
    assert_no_reach_into_lightci(apps_port, jar)
    response, raw = request(apps_port, "GET", "/apps/shop/cart?id=7")
    assert response.status == 200
    assert json.loads(raw)["path"] == "/cart?id=7"
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    for path in ("/", "/login", "/jobs/hello", "/api/jobs", "/health"):
        response, raw = request(apps_port, "GET", path, headers={"Cookie": cookie})
        assert response.status == 404, (path, raw)
        assert "apps are at /apps/<job>/" in json.loads(raw)["error"]
    response, raw = request(apps_port, "GET", "/apps/bad%20name/")
    assert response.status == 400
    # The old address on lightci's origin still works.
    response, raw = request(server.port, "GET", "/apps/shop/cart")
    assert response.status == 200
