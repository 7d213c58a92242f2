"""A real `lightci serve` against hostile or unusual surroundings: a slowloris, a TLS proxy in
front, a port someone else holds."""

from __future__ import annotations

import http.client
import resource
import selectors
import socket
import time

import pytest

from .conftest import free_port
from .test_proxy import TOKEN, cookies_of, login, request

IDLE_SOCKETS = 300


@pytest.fixture
def sockets():
    """Raw client sockets, all closed at the end; the open-files limit raised to hold them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4 * IDLE_SOCKETS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4 * IDLE_SOCKETS, hard), hard))
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_300_idle_or_half_sent_connections_do_not_stop_the_server(home, serve, sockets):
    home.job("slow", build=f"while [ ! -e {home.path}/gate ]; do sleep 0.1; done\n")
    server = serve()
    build_id = home.trigger("slow")
    home.wait_for([build_id], {"running"})
    # A live log is not idle: it outlives every idle socket below (it pings every 15 s).
    live = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    live.request("GET", f"/api/builds/{build_id}/events")
    stream = live.getresponse()
    assert stream.status == 200
    assert b"event: " in stream.read1(65536)

    for n in range(IDLE_SOCKETS):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if n % 2:  # half a request: the line and a header, never the blank line
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)

    for path in ("/health", "/"):
        # Generous: the limit is to fail, not to measure (the old server never answered).
        response, _ = request_within(server.port, path, timeout=10)
        assert response.status == 200, path

    # Idle and half-sent sockets are closed by the server (after 20-25 s; the old one: 2.5 min).
    deadline = time.time() + 45
    pending = set(sockets)
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while pending:
            assert time.time() < deadline, f"{len(pending)} idle sockets still open"
            for key, _ in selector.select(timeout=1):
                if closed_by_server(key.fileobj):
                    selector.unregister(key.fileobj)
                    pending.discard(key.fileobj)

    seen = b""
    while b": ping" not in seen:
        chunk = stream.read1(65536)
        assert chunk, f"the live log was cut: {seen[-300:]!r}"
        seen += chunk
    (home.path / "gate").touch()
    assert home.wait_for([build_id])[0]["status"] == "success"
    rest = stream.read()
    assert b"event: end" in seen + rest
    live.close()


def request_within(port: int, path: str, timeout: float):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    response = conn.getresponse()
    return response, response.read()


TLS_PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ci.example.com"}


def test_behind_a_trusted_tls_proxy_lightci_knows_it_is_https(home, serve):
    home.job("hello", build="true\n")
    server = serve(env={"LIGHTCI_TOKEN": TOKEN, "LIGHTCI_SERVER_TRUSTED_PROXY": "127.0.0.1"})
    response, jar = login(server.port, TOKEN, headers=TLS_PROXY)
    assert response.headers["Location"] == "https://ci.example.com/jobs/hello"
    session = [c for c in response.headers.get_all("Set-Cookie") if "lightci_session=" in c]
    assert len(session) == 1 and "; secure" in session[0].lower()
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    response, page = request(server.port, "GET", "/jobs/hello", headers=TLS_PROXY)
    assert response.status == 200
    assert b"https://ci.example.com/hooks/hello" in page
    response, _ = request(server.port, "GET", "/", headers={**TLS_PROXY, "Cookie": cookie})
    assert response.status == 200


@pytest.mark.parametrize("trusted", ["", "10.9.9.9"])
def test_forwarded_headers_from_anyone_else_change_nothing(home, serve, trusted):
    home.job("hello", build="true\n")
    server = serve(env={"LIGHTCI_TOKEN": TOKEN, "LIGHTCI_SERVER_TRUSTED_PROXY": trusted})
    here = f"http://127.0.0.1:{server.port}"
    response, _ = login(server.port, TOKEN, headers=TLS_PROXY)
    assert response.headers["Location"] == f"{here}/jobs/hello"
    session = [c for c in response.headers.get_all("Set-Cookie") if "lightci_session=" in c]
    assert len(session) == 1 and "secure" not in session[0].lower()
    assert "lightci_session" in cookies_of(response)
    _, page = request(server.port, "GET", "/jobs/hello", headers=TLS_PROXY)
    assert f"{here}/hooks/hello".encode() in page
    assert b"ci.example.com" not in page


@pytest.mark.parametrize("command", ["serve", "web", "serve-apps"])
def test_a_taken_port_ends_the_command_with_one_clear_line(home, command):
    home.job("hello", build="true\n")
    build_id = home.trigger("hello")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        if command == "serve-apps":
            with open(home.path / "lightci.toml", "a") as toml:
                toml.write(f"[server]\napps_port = {taken}\n")
            argv = ["serve", "--port", str(free_port())]
        else:
            argv = [command, "--port", str(taken)]
        result = home.cli(*argv, check=False, timeout=30)
    finally:
        holder.close()
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{taken}" in lines[0]
    assert "in use" in lines[0]
    # Nothing ran before the port was found taken: no worker took the build.
    assert home.build(build_id)["status"] == "queued"
