"""What an outside attacker sent lightci (issue 9, items 8-10), each kept refused.

Open redirects after a login, token guessing, cookies that outlive a logout,
planted CSRF cookies, oversized and control-character params. Forge deliveries
(items 11, 13, 14) are in test_hostile_input_hooks.py; header bytes and server
paths (items 12, 16) in test_hostile_input_server.py.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import subprocess
from urllib.parse import urlencode, urlsplit

import pytest

from tests.conftest import BIN, WebClient
from tests.hostile import (
    SECRET,
    TOKEN,
    app_job_fixture,  # noqa: F401 - the app_job fixture
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


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
