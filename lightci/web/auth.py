"""Who may do what: the token, the login session, CSRF, and the brake on guessing.

API writes need the bearer token, or the login cookie plus the X-CSRF-Token
header; browser forms carry a CSRF field; cross-site requests never change
anything. With no token set, everyone may write, but a browser only by a host name
the server knows (see _rebound).

A login is a row in the session table (every web process sees a logout); the
cookie names the row and is signed with the token, so a new token logs
everyone out. A logged-in browser's CSRF token is derived from its session, so
a CSRF cookie planted by another app on this origin passes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import socket
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import bottle
from bottle import request, response

from lightci.config import MIN_TOKEN, check_token, settings
from lightci.errors import UserError
from lightci.homes import resolve_home
from lightci.models import Session

SESSION_COOKIE = "lightci_session"
CSRF_COOKIE = "lightci_csrf"
SESSION_DAYS = 30
# Wrong tokens (bearer or login form) one client address may send per window;
# past that, token checks from it answer 429 until the window has passed.
FAILURES = 10
FAILURE_WINDOW = 60.0  # seconds

# What a request proved, worked out once per request (see _state).
OPEN, TOKEN, SESSION, NONE, WRONG, THROTTLED = "open token session none wrong throttled".split()
BEARER = "send Authorization: Bearer <token>"
UNSAFE = "unsafe"  # lightci.toml's token was made too short while serving: nobody gets in


def sign(token: str, purpose: str, nonce: str) -> str:
    return hmac.new(token.encode(), f"{purpose}:{nonce}".encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def header(name: str) -> str | None:
    """A request header as text: "" when absent, None when it is not UTF-8.

    Bottle's own request.headers raises on such bytes, which made a 500 of
    one \\xff byte in any header lightci reads.
    """
    raw = request.environ.get("HTTP_" + name.upper().replace("-", "_"), "")
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None


class Throttle:
    """Failed token checks per client: past `limit` within `window` seconds, wait.

    In this process's memory: with several web processes each brakes on its own.
    """

    def __init__(self, limit: int = FAILURES, window: float = FAILURE_WINDOW, clients=10_000):
        self.limit, self.window, self.clients = limit, window, clients
        self.lock = threading.Lock()
        self.failures: dict[str, deque[float]] = {}

    def wait(self, client: str, now: float) -> int:
        """Seconds until the client may be checked again; 0 when it may now."""
        with self.lock:
            times = self.failures.get(client)
            if times is None or len(times) < self.limit or times[0] <= now - self.window:
                return 0
            return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, client: str, now: float) -> None:
        with self.lock:
            if client not in self.failures and len(self.failures) >= self.clients:
                self._forget(now)
            self.failures.setdefault(client, deque(maxlen=self.limit)).append(now)

    def _forget(self, now: float) -> None:
        """Room for a new client: drop those with no recent failure, else the oldest."""
        stale = [c for c, t in self.failures.items() if t[-1] <= now - self.window]
        for client in stale or list(self.failures)[: self.clients // 10 or 1]:
            del self.failures[client]


_throttles: dict[Path, Throttle] = {}  # one per home: a process may serve several (tests do)
_throttles_lock = threading.Lock()


def _throttle() -> Throttle:
    home = settings().home
    with _throttles_lock:
        return _throttles.setdefault(home, Throttle())


def _client() -> str:
    return request.environ.get("REMOTE_ADDR") or "-"


def _too_many(wait: int) -> UserError:
    return UserError(
        f"too many wrong tokens from {_client()}: try again in {wait} s", 429, retry_after=wait
    )


def check_login(given: str) -> bool:
    """The login form's token: True when right; a wrong one counts against the client."""
    throttle, now = _throttle(), time.time()
    wait = throttle.wait(_client(), now)
    if wait:
        raise _too_many(wait)
    if _unsafe_token():
        raise _refused()
    if same(given, settings().token):
        return True
    throttle.failed(_client(), now)
    return False


def _unsafe_token() -> bool:
    """A running server's lightci.toml may have changed since its start (check_token)."""
    try:
        check_token(settings())
    except UserError:
        return True
    return False


def _refused() -> UserError:
    return UserError(
        f"[server] token is shorter than {MIN_TOKEN} characters: this server accepts no "
        "token until lightci.toml has a longer one",
        503,
    )


def _session_nonce(token: str) -> str | None:
    """The login cookie's session, when its signature is right and the session not ended."""
    nonce, _, signature = (request.get_cookie(SESSION_COOKIE) or "").partition(".")
    if not (nonce and signature and same(signature, sign(token, "session", nonce))):
        return None
    oldest = time.time() - SESSION_DAYS * 86400
    alive = Session.select().where(Session.nonce == nonce, Session.created_at > oldest).exists()
    return nonce if alive else None


def _state() -> str:
    """What this request proved, once per request (pages ask several times)."""
    env = request.environ
    if "lightci.auth" in env:
        return env["lightci.auth"]
    token = settings().token
    state, nonce = OPEN, None
    if _unsafe_token():
        state = UNSAFE
    elif token:
        state = NONE
        given = header("Authorization")
        if given != "":
            throttle, now = _throttle(), time.time()
            scheme, _, value = (given or "").partition(" ")
            if throttle.wait(_client(), now):
                state = THROTTLED
            elif scheme.lower() == "bearer" and same(value.strip(), token):
                state = TOKEN
            else:
                throttle.failed(_client(), now)
                state = WRONG
        if state != TOKEN:
            nonce = _session_nonce(token)
            state = SESSION if nonce else state
    env["lightci.auth"], env["lightci.session"] = state, nonce
    return state


def start_session() -> None:
    """After a right login: a new session row, and its cookie."""
    token = settings().token
    nonce = secrets.token_urlsafe(18)
    now = time.time()
    Session.delete().where(Session.created_at < now - SESSION_DAYS * 86400).execute()
    Session.create(nonce=nonce, created_at=now)
    response.set_cookie(
        SESSION_COOKIE,
        f"{nonce}.{sign(token, 'session', nonce)}",
        path="/",
        httponly=True,
        samesite="lax",
        max_age=SESSION_DAYS * 86400,
        secure=request.urlparts.scheme == "https",
    )


def end_session() -> None:
    """Logout: the session ends on the server, so a copy of the cookie stops working too."""
    if _state() == SESSION:
        Session.delete().where(Session.nonce == request.environ["lightci.session"]).execute()
    response.delete_cookie(SESSION_COOKIE, path="/")


def logged_in() -> bool:
    return _state() in (TOKEN, SESSION)


def can_read() -> bool:
    return settings()["server"]["public"] or _state() in (OPEN, TOKEN, SESSION)


def can_write() -> bool:
    return _state() in (OPEN, TOKEN, SESSION)


def csrf_cookie() -> str:
    """The CSRF token this page's forms carry.

    Logged in: derived from the session. Otherwise (no token set, or the login
    form): a double-submit cookie, made on first sight.
    """
    if _state() == SESSION:
        return sign(settings().token, "csrf", request.environ["lightci.session"])
    value = request.environ.get("lightci.csrf") or request.get_cookie(CSRF_COOKIE) or ""
    if len(value) < 16:
        value = secrets.token_urlsafe(24)
        response.set_cookie(CSRF_COOKIE, value, path="/", httponly=True, samesite="lax")
    request.environ["lightci.csrf"] = value
    return value


def _csrf_ok(given: str | None) -> bool:
    if not given:
        return False
    if _state() == SESSION:
        return same(given, sign(settings().token, "csrf", request.environ["lightci.session"]))
    return same(given, request.get_cookie(CSRF_COOKIE) or "")


def csrf_field_ok() -> bool:
    return _csrf_ok(request.forms.getunicode("csrf", default=""))


def _cross_site() -> bool:
    """Browsers send Sec-Fetch-Site; one that is not UTF-8 is no browser's: refused too."""
    site = header("Sec-Fetch-Site")
    return site is None or site == "cross-site"


def _rebound() -> bool:
    """A browser's request by a host name this server was not told of, while no token is set.

    With no token anyone who reaches the server may write, and a page on another
    site can reach one on loopback by pointing its own name at 127.0.0.1 (DNS
    rebinding): the browser then calls the request same-origin. It still sends the
    name it used. Known names: IP addresses, localhost, this machine's, and the
    host of [server] url and [server] host.
    """
    if not (header("Sec-Fetch-Site") or header("Origin")):  # curl and scripts send neither;
        return False  # a browser sends one with every write (Safari before 16.4: Origin)
    try:
        name = (urlsplit("//" + (header("Host") or "")).hostname or "").rstrip(".")
    except ValueError:  # "[evil": no name anyone could know
        return True
    if not name or name == "localhost" or name.endswith(".localhost") or _is_address(name):
        return False
    server = settings()["server"]
    known = {socket.gethostname().lower(), server["host"].lower()}
    known.add((urlsplit(server["url"]).hostname or "").lower())
    return name.lower() not in known


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _unknown_name() -> UserError:
    host = header("Host") or ""
    return UserError(
        f"this server has no token, so it takes changes from browsers only by an address or a "
        f"name it knows, not {host[:100]!r}: set [server] url to the address you use, or a token",
        403,
    )


def _wrong_or(missing: str) -> str:
    if _state() == WRONG:
        return "the token sent is not this server's ([server] token or LIGHTCI_TOKEN)"
    return missing


def require_read() -> None:
    if can_read():
        return
    if _state() == UNSAFE:
        raise _refused()
    if _state() == THROTTLED:
        raise _too_many(_throttle().wait(_client(), time.time()) or 1)
    raise UserError(_wrong_or(f"this server is not public: {BEARER}"), 401)


def require_write() -> None:
    """API writes: the bearer token, or the login cookie plus the X-CSRF-Token header."""
    if _cross_site():
        raise UserError("cross-site requests cannot change builds", 403)
    state = _state()
    if state == OPEN and _rebound():
        raise _unknown_name()
    if state in (OPEN, TOKEN):
        return
    if state == UNSAFE:
        raise _refused()
    if state == SESSION:
        if _csrf_ok(header("X-CSRF-Token")):
            return
        raise UserError("missing or wrong X-CSRF-Token header for a cookie login", 403)
    if state == THROTTLED:
        raise _too_many(_throttle().wait(_client(), time.time()) or 1)
    raise UserError(_wrong_or(f"this action needs the token: {BEARER}"), 401)


def form_checked() -> None:
    """Browser forms: same-site, the CSRF field, and a login when a token is set."""
    if _cross_site() or not csrf_field_ok():
        raise UserError("the form expired or came from another site: reload and try again", 403)
    if _state() == UNSAFE:
        raise _refused()
    if _state() == OPEN and _rebound():
        raise _unknown_name()
    if not can_write():  # back to the page the form was on: /jobs/app/trigger -> /jobs/app
        page_path = request.path.rsplit("/", 1)[0]
        raise bottle.redirect("/login?" + urlencode({"next": page_path}), 303)


def html_read() -> None:
    """Pages of a server that is not public send a person to the login form."""
    if not can_read() and _state() == UNSAFE:
        raise _refused()
    if not can_read():
        raise bottle.redirect("/login?" + urlencode({"next": request.fullpath}), 303)


def local_path(target: str) -> str:
    """Only paths on this server after a login: never //evil.example or https://...

    Browsers drop tabs and newlines from a URL, so "/\\t/evil.example" would
    become "//evil.example": any control character or space refuses the target.
    """
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) <= 32 or ord(c) == 127 for c in target)
    ):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def public_text(text: str) -> str:
    """An error or a broken job's reason as a caller may see it: server paths only after a login."""
    try:
        if logged_in():
            return text
        jobs_dir = settings().jobs_dir
    except Exception:  # an error page about the settings or the database itself: hide all
        jobs_dir = resolve_home() / "jobs"
    for path, name in ((resolve_home(), "HOME"), (jobs_dir, "JOBS_DIR")):
        text = text.replace(str(path), name)
    return text
