"""What an outside attacker sent lightci (issue 9, items 8-14 and 16), each kept refused.

Open redirects after a login, token guessing, cookies that outlive a logout,
planted CSRF cookies, oversized and control-character params, replayed signed
pushes, header bytes that are not UTF-8, Gitea's form deliveries, the README's
generic-webhook example as printed, and server paths shown to strangers. The
forge deliveries are real ones (tests/forge-payloads/SOURCES.md).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from tests.conftest import BIN, REPO, WebClient

TOKEN = "hostile-input-token-0123"
SECRET = "hostile-hook-secret"
PAYLOADS = Path(__file__).parent / "forge-payloads"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def app_job(home):
    home.job(
        "app",
        f"""
        webhook_secret = "{SECRET}"
        [params]
        flavor = "dev"
        notes = ""
        """,
        build="echo built\n",
    )
    return "app"


def page_csrf(web, *paths: str) -> str:
    """The CSRF token a page's forms carry, as a browser reads it."""
    for path in (*paths, "/login", "/", "/jobs/app"):
        found = re.search(r'name="csrf" value="([^"]+)"', web.get(path).text)
        if found:
            return found.group(1)
    raise AssertionError("no form on any page")


def form(web, path, csrf=None, **fields):
    body = urlencode({"csrf": csrf or page_csrf(web), **fields})
    return web.post(path, body=body, headers=FORM)


def from_address(web, address: str) -> WebClient:
    """The same app, as seen from another client address."""
    return WebClient(lambda environ, start: web.app({**environ, "REMOTE_ADDR": address}, start))


# -- item 8: no open redirect after a login ---------------------------------------------


@pytest.mark.parametrize("control", ["%09", "%0a", "%0d", "%0D%0A", "%00", "%20"])
def test_a_control_character_in_next_cannot_send_a_login_off_the_server(
    web, app_job, monkeypatch, control
):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    target = f"/{control}/evil.example/x"
    shown = web.get(f"/login?next={target}").text
    assert "evil.example" not in shown and 'name="next" value="/"' in shown
    body = f"csrf={page_csrf(web)}&token={TOKEN}&next={target}"
    answer = web.post("/login", body=body, headers=FORM)
    assert answer.status == 303
    assert urlsplit(answer.headers["location"]).netloc == "127.0.0.1"
    assert "evil" not in answer.headers["location"]


def test_a_plain_local_next_still_works(web, app_job, monkeypatch):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    answer = form(web, "/login", token=TOKEN, next="/jobs/app?before=5")
    assert answer.headers["location"] == "http://127.0.0.1/jobs/app?before=5"


# -- item 9: guessing, token length, logout, CSRF bound to the session ------------------


def test_wrong_bearer_tokens_are_throttled_per_client_with_retry_after(web, app_job, monkeypatch):
    from lightci.web.auth import FAILURES

    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    attacker, admin = from_address(web, "203.0.113.9"), from_address(web, "198.51.100.7")
    right = {"Authorization": f"Bearer {TOKEN}"}
    for n in range(FAILURES):
        guess = {"Authorization": f"Bearer guess-{n:020d}"}
        assert attacker.post("/api/jobs/app/builds", headers=guess).status == 401
    refused = attacker.post("/api/jobs/app/builds", headers={"Authorization": "Bearer again"})
    assert refused.status == 429 and 0 < int(refused.headers["retry-after"]) <= 60
    # The right token from that address is not even checked until the window passed ...
    assert attacker.post("/api/jobs/app/builds", headers=right).status == 429
    assert attacker.get("/api/jobs").status == 200  # a public read needs no token
    # ... and another client is not slowed, however many right requests it sends.
    for _ in range(3 * FAILURES):
        assert admin.get("/api/builds", headers=right).status == 200
    assert admin.post("/api/jobs/app/builds", headers=right).status == 201


def test_login_tries_are_throttled_too(web, app_job, monkeypatch):
    from lightci.web.auth import FAILURES

    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    for n in range(FAILURES):
        assert form(web, "/login", token=f"guess-{n}", next="/").status == 401
    refused = form(web, "/login", token=TOKEN, next="/")
    assert refused.status == 429 and int(refused.headers["retry-after"]) > 0
    assert "lightci_session" not in web.cookies


def test_the_throttle_forgets_failures_once_the_window_has_passed():
    from lightci.web.auth import Throttle

    throttle = Throttle(limit=3, window=60)
    for t in (0, 1, 2):
        throttle.failed("a", t)
    assert throttle.wait("a", 2.5) == 58 and throttle.wait("b", 2.5) == 0
    assert throttle.wait("a", 59.9) == 1 and throttle.wait("a", 60) == 0
    throttle.failed("a", 61)  # the window slides: 1, 2 and 61 are not 3 in 60 s
    assert throttle.wait("a", 61) == 0
    small = Throttle(limit=1, window=60, clients=2)
    for n, client in enumerate(["a", "b", "c", "d"]):
        small.failed(client, n)
    assert len(small.failures) <= 2 and small.wait("d", 3) > 0


@pytest.mark.parametrize("command", ["serve", "web"])
def test_a_server_refuses_to_start_with_a_short_token(home, command):
    env = {**home.env, "LIGHTCI_TOKEN": "fifteen-chars-x"}
    result = subprocess.run(
        [str(BIN / "lightci"), command, "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert "15 characters" in result.stderr and "at least 16" in result.stderr
    assert "Traceback" not in result.stderr


class Browser:
    """Cookies and forms against a real server, without following redirects."""

    def __init__(self, url: str):
        self.url, self.cookies = url, {}

    def request(self, method: str, path: str, fields=None, headers=None):
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        body = urlencode(fields).encode() if fields is not None else None
        sent = {**(FORM if fields is not None else {}), **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=sent)
        res = conn.getresponse()
        text = res.read().decode()
        for name, value in res.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0].strip('"')
                if "max-age=0" in value.lower() or "expires=thu, 01 jan 1970" in value.lower():
                    self.cookies.pop(key)
        conn.close()
        return res.status, text

    def csrf(self, path="/") -> str:
        return re.search(r'name="csrf" value="([^"]+)"', self.request("GET", path)[1]).group(1)


def test_logout_ends_the_session_in_every_web_process(home, serve, app_job):
    env = {"LIGHTCI_TOKEN": TOKEN}
    one, two = serve(env=env, web=True), serve(env=env, web=True)
    alice = Browser(one.url)
    status, _ = alice.request(
        "POST", "/login", {"csrf": alice.csrf("/login"), "token": TOKEN, "next": "/"}
    )
    assert status == 303 and "lightci_session" in alice.cookies
    stolen = Browser(two.url)  # a copy of the cookie, used on the other process
    stolen.cookies = {"lightci_session": alice.cookies["lightci_session"]}
    csrf = stolen.csrf("/")
    assert "Log out" in stolen.request("GET", "/")[1]
    write = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    assert stolen.request("POST", "/api/jobs/app/builds", headers=write)[0] == 201
    assert alice.request("POST", "/logout", {"csrf": alice.csrf("/")})[0] == 303
    assert "lightci_session" not in alice.cookies
    assert "Log out" not in stolen.request("GET", "/")[1]
    assert stolen.request("POST", "/api/jobs/app/builds", headers=write)[0] == 401
    assert len(home.builds()) == 1


def test_a_planted_csrf_cookie_passes_nothing_for_a_logged_in_browser(web, app_job, monkeypatch):
    monkeypatch.setenv("LIGHTCI_TOKEN", TOKEN)
    assert form(web, "/login", token=TOKEN, next="/").status == 303
    # Another app on this origin sets lightci_csrf=... for path / and submits a form.
    web.cookies["lightci_csrf"] = planted = "planted-by-a-sibling-app-0123456789"
    assert form(web, "/jobs/app/trigger", csrf=planted, branch="main").status == 403
    answer = web.post("/api/jobs/app/builds", headers={"X-CSRF-Token": planted})
    assert answer.status == 403
    assert form(web, "/jobs/app/trigger", branch="main").status == 303  # the page's own token
    assert len(web.get("/api/builds").json()["builds"]) == 1


def test_forms_without_a_token_keep_working(web, app_job):
    assert form(web, "/jobs/app/trigger", branch="main").status == 303
    assert form(web, "/jobs/app/trigger", csrf="guess-guess-guess-guess", branch="x").status == 403


# -- item 10: params are capped and hold no control characters, from every entry --------

BAD_PARAMS = [("x" * 4097, "4097 bytes"), ("a\x00b", "U+0000"), ("\x1b[31m", "U+001B")]


@pytest.mark.parametrize("value, words", BAD_PARAMS)
def test_a_huge_or_control_character_param_is_400_from_the_api_form_and_webhook(
    web, home, app_job, value, words
):
    api = web.post("/api/jobs/app/builds", json_body={"params": {"notes": value}})
    assert api.status == 400 and words in api.json()["error"]
    page = form(web, "/jobs/app/trigger", branch="main", **{"param.notes": value})
    assert page.status == 400 and words in page.text
    body = json.dumps({"branch": "main", "params": {"notes": value}}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    hook = web.post("/hooks/app", body=body, headers={"X-Lightci-Signature-256": signature})
    assert hook.status == 400 and words in hook.json()["error"]
    assert home.builds() == []


def test_tabs_newlines_and_4_kb_are_still_a_param(web, home, app_job):
    value = "line one\n\tline two " + "x" * (4096 - 20)
    answer = web.post("/api/jobs/app/builds", json_body={"params": {"notes": value}})
    assert answer.status == 201 and answer.json()["params"]["notes"] == value


def test_the_cli_refuses_a_bad_param_in_one_line(home, app_job):
    for value, words in (("x" * 5000, "5000 bytes"), ("a\x01b", "U+0001")):
        result = home.cli("trigger", "app", "-p", f"notes={value}", check=False)
        assert result.returncode == 2 and words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and len(result.stderr) < 300
    assert not (home.path / "lightci.db").exists() or home.builds() == []


# -- item 11: a replayed signed push queues nothing new ---------------------------------


def real_delivery(forge: str, payload: str, secret=SECRET, as_form=False, delivery=None):
    """A forge's delivery of one of its real payloads, headers as that forge sends them."""
    json_body = (PAYLOADS / ("gitea" if forge == "forgejo" else forge) / payload).read_bytes()
    spec = json.loads((PAYLOADS / forge / "headers.json").read_text())
    body = urlencode({"payload": json_body.decode()}).encode() if as_form else json_body
    event = spec["events"][payload]
    event, event_type = (event, event) if isinstance(event, str) else event
    values = {
        "{UUID}": delivery or str(uuid.uuid4()),
        "{UUID2}": str(uuid.uuid4()),
        "{EVENT}": event,
        "{EVENT_TYPE}": event_type,
        "{SECRET_AS_IS}": secret,
        "{HMAC_SHA256_HEX_OF_RAW_BODY}": hmac.new(secret.encode(), body, "sha256").hexdigest(),
        "{HMAC_SHA1_HEX_OF_RAW_BODY}": hmac.new(secret.encode(), body, "sha1").hexdigest(),
        # Gitea and Forgejo sign the JSON, in form mode too (services/webhook/deliver.go).
        "{HMAC_SHA256_HEX_OF_JSON_PAYLOAD}": hmac.new(
            secret.encode(), json_body, "sha256"
        ).hexdigest(),
        "{HMAC_SHA1_HEX_OF_JSON_PAYLOAD}": hmac.new(secret.encode(), json_body, "sha1").hexdigest(),
    }
    headers = {}
    for name, value in spec["_common"].items():
        for placeholder, real in values.items():
            value = value.replace(placeholder, real)
        headers[name] = value
    if as_form:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return body, headers


REAL_PUSHES = [("github", "push-branch.json"), ("gitea", "push.json"), ("gitlab", "push.json")]


@pytest.mark.parametrize("forge, payload", REAL_PUSHES)
def test_a_captured_push_replayed_with_a_new_or_no_delivery_id_builds_nothing(
    web, home, app_job, forge, payload
):
    body, headers = real_delivery(forge, payload)
    first = web.post("/hooks/app", body=body, headers=headers)
    assert first.status == 202, first
    [build_id] = first.json()["builds"]
    ids = [k for k in headers if any(w in k for w in ("Delivery", "UUID", "Idempotency"))]
    fresh_id = {**headers, **{k: str(uuid.uuid4()) for k in ids}}
    no_id = {k: v for k, v in headers.items() if k not in ids}
    for replay in (fresh_id, no_id):
        again = web.post("/hooks/app", body=body, headers=replay)
        assert again.status == 200, again
        assert again.json()["builds"] == [build_id]
        assert f"app #1 (id {build_id})" in again.json()["skipped"]
        assert "retry" in again.json()["skipped"]
    assert len(home.builds()) == 1
    # A person rebuilds with retry, and manual triggers of that commit are never skipped.
    assert web.post(f"/api/builds/{build_id}/retry").status == 201
    commit = home.build(build_id)["commit"]
    for _ in range(2):
        answer = web.post("/api/jobs/app/builds", json_body={"branch": "master", "commit": commit})
        assert answer.status == 201
    assert len(home.builds()) == 4


def test_the_same_commit_with_other_params_or_on_another_ref_is_another_push(web, home, app_job):
    def generic(data):
        body = json.dumps(data).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return web.post(
            "/hooks/app", body=body, headers={"X-Lightci-Signature-256": "sha256=" + signature}
        )

    sha = "4522cbcefc20728a5b72b3a86af35e608622c514"
    assert generic({"branch": "main", "commit": sha, "params": {"flavor": "qa"}}).status == 202
    assert generic({"branch": "main", "commit": sha, "params": {"flavor": "prod"}}).status == 202
    assert generic({"branch": "release", "commit": sha, "params": {"flavor": "qa"}}).status == 202
    assert generic({"branch": "main", "commit": sha, "params": {"flavor": "qa"}}).status == 200
    assert len(home.builds()) == 3


# -- item 13: Gitea and Forgejo in form mode sign the JSON --------------------------------


@pytest.mark.parametrize("forge", ["gitea", "forgejo"])
def test_a_gitea_or_forgejo_form_delivery_is_checked_over_the_json_it_signed(
    web, home, app_job, forge
):
    body, headers = real_delivery(forge, "push.json", as_form=True)
    assert body.startswith(b"payload=%7B")
    answer = web.post("/hooks/app", body=body, headers=headers)
    assert answer.status == 202, answer
    row = home.build(answer.json()["builds"][0])
    assert (row["branch"], row["commit"]) == ("master", "4522cbcefc20728a5b72b3a86af35e608622c514")
    body, headers = real_delivery(forge, "push.json", secret="not-the-secret", as_form=True)
    wrong = web.post("/hooks/app", body=body, headers=headers).json()["error"]
    assert "does not match the JSON payload" in wrong
    unsigned = {k: v for k, v in headers.items() if "Signature" not in k}
    missing = web.post("/hooks/app", body=body, headers=unsigned).json()["error"]
    assert missing.startswith("missing signature") and "does not match" not in missing
    assert len(home.builds()) == 1


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


# -- item 14: the README's generic-webhook example works as printed ------------------------


def test_the_readme_generic_webhook_example_works_as_printed(home, serve):
    if not (shutil.which("curl") and shutil.which("openssl")):
        pytest.skip("needs curl and openssl, as the README's example does")
    readme = (REPO / "README.md").read_text()
    section = readme.split("- **Anything else**", 1)[1].split("\nAnswers:", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("      ")]
    assert any(line.startswith("curl ") for line in lines), section
    home.job("hello", f'webhook_secret = "{SECRET}"\n', build="echo hello\n")
    server = serve()
    result = subprocess.run(
        ["bash", "-euc", "\n".join(lines)],
        env={**home.env, "S": server.url, "SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result
    [build_id] = json.loads(result.stdout)["builds"]
    assert home.build(build_id)["branch"] == "main"


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
