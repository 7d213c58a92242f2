"""What an outside attacker sent lightci's server (issue 9, items 12 and 16).

Header bytes that are not UTF-8, strange Last-Event-IDs, server paths shown to
strangers, and one clear line for a home lightci cannot write.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import BIN
from tests.hostile import (
    SECRET,
    TOKEN,
    app_job_fixture,  # noqa: F401 - the app_job fixture
)

# -- item 12: header bytes that are not UTF-8 are a 4xx, never a 500 ---------------------


def test_a_non_utf8_byte_in_a_header_is_never_a_500(web, home, app_job, monkeypatch):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    bad = "\xff"  # WSGI hands header bytes over as latin-1: this is the byte 0xff
    for name in ("Authorization", "Sec-Fetch-Site", "X-CSRF-Token", "Cookie"):
        for method, path in (("GET", "/"), ("GET", "/jobs/nope"), ("POST", "/api/jobs/app/builds")):
            answer = web.request(method, path, headers={name: f"Bearer {bad}"})
            assert answer.status < 500, (name, path, answer)
    sign = "sha256=" + hmac.new(SECRET.encode(), b"{}", hashlib.sha256).hexdigest()
    for name, headers in (
        ("X-Hub-Signature-256", {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign + bad}),
        ("X-GitHub-Event", {"X-GitHub-Event": "push" + bad, "X-Hub-Signature-256": sign}),
        ("X-Gitlab-Token", {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET + bad}),
    ):
        answer = web.post("/hooks/app", body=b"{}", headers=headers)
        assert answer.status == 400 and name in answer.json()["error"], answer
    assert home.builds() == []


def raw_status(url: str, request: bytes) -> int:
    """Send request bytes as they are (urllib would refuse \\xff) and read the status."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(request)
        return int(conn.makefile("rb").readline().split()[1])


def test_header_bytes_through_waitress_get_no_500(home, serve, app_job):
    server = serve(env={"LIGHTCI_TOKEN": TOKEN})
    body = b'{"ref": "refs/heads/main"}'
    for line in (
        b"Authorization: Bearer \xff",
        b"Sec-Fetch-Site: \xff",
        b"X-Hub-Signature-256: sha256=\xff",
        b"X-GitHub-Event: push\xff",
        b"X-Gitlab-Token: \xff",
    ):
        for target in (b"POST /hooks/app", b"POST /api/jobs/app/builds", b"GET /jobs/app"):
            request = b"%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % (target, line)
            request += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            status = raw_status(server.url, request)
            assert 200 <= status < 500, (line, target, status)
    assert home.builds() == []


def events(web, build_id: int, last_event_id: str) -> list[bytes]:
    """A whole event stream of a finished build, asked with a Last-Event-ID."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/api/builds/{build_id}/events",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "HTTP_LAST_EVENT_ID": last_event_id,
    }
    seen = []
    stream = web.app(environ, lambda status, headers, exc_info=None: seen.append(status))
    try:
        chunks = list(stream)
    finally:
        stream.close()
    assert seen == ["200 OK"], (seen, chunks)
    return chunks


@pytest.mark.parametrize("resume", ["²", "9" * 5000, str(2**63), "-1", "0x10", " 5"])
def test_a_strange_last_event_id_is_ignored_and_the_stream_lives(web, home, app_job, resume):
    build_id = web.post("/api/jobs/app/builds").json()["id"]
    log = home.path / "builds" / "app" / "1" / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text("first line\nsecond line\n")
    with home.db() as conn:
        conn.execute("UPDATE build SET status = 'success', finished_at = queued_at + 1")
    text = b"".join(events(web, build_id, resume)).decode()
    assert "first line" in text and "event: end" in text
    assert "first line" not in b"".join(events(web, build_id, "11")).decode()


# -- item 16: no server paths for strangers; one clear line for an unusable home ----------


def test_anonymous_callers_see_no_server_paths_and_a_logged_in_one_does(
    web, home, app_job, monkeypatch
):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    home.job("broken", "stagez = []\n", build="true\n")
    where = str(home.path)
    shown = [
        web.get("/api/jobs/nope").text,
        web.get("/jobs/nope").text,
        web.get("/jobs/broken").text,
        web.get("/").text,
        web.get("/api/jobs").text,
    ]
    for text in shown:
        assert where not in text
    assert "HOME/jobs/broken/job.toml" in web.get("/api/jobs").text
    admin = {"Authorization": f"Bearer {TOKEN}"}
    assert where in web.get("/api/jobs/nope", headers=admin).json()["error"]


def read_only(home_dir: Path, *argv: str) -> subprocess.CompletedProcess:
    """lightci with home_dir mounted read-only, in a user and mount namespace of its own."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) for a read-only mount")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here: {probe.stderr.decode().strip()}")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(home_dir), str(BIN / "lightci"), *argv],
        env={"PATH": f"{BIN}:/usr/bin:/bin", "LIGHTCI_HOME": str(home_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_into_a_read_only_directory_says_so_in_one_line(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    result = read_only(target, "init", str(target / "home"))
    assert result.returncode == 2, result
    assert result.stderr.startswith("lightci: cannot make a lightci home in ")
    assert "Read-only file system" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["status"], ["trigger", "app"], ["jobs"]])
def test_any_command_on_a_read_only_home_says_so_in_one_line(home, app_job, argv):
    home.cli("trigger", "app")  # a home in use: its database exists
    result = read_only(home.path, *argv)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("lightci: ")
