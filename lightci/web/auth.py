"""Who may do what: the token, the login session, CSRF.

API writes need the bearer token, or the login cookie plus the X-CSRF-Token
header; browser forms carry a double-submit CSRF field; cross-site requests
never change anything. With no token set, everyone may write.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlencode

import bottle
from bottle import request, response

from lightci.config import settings
from lightci.errors import UserError

SESSION_COOKIE = "lightci_session"
CSRF_COOKIE = "lightci_csrf"


def sign(token: str, purpose: str, nonce: str) -> str:
    return hmac.new(token.encode(), f"{purpose}:{nonce}".encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def _bearer_ok(token: str) -> bool:
    scheme, _, given = request.get_header("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and same(given.strip(), token)


def _session_ok(token: str) -> bool:
    """The login cookie: a nonce signed with the token (a new token logs everyone out)."""
    nonce, _, signature = (request.get_cookie(SESSION_COOKIE) or "").partition(".")
    return bool(nonce and signature) and same(signature, sign(token, "session", nonce))


def session_value(token: str) -> str:
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{sign(token, 'session', nonce)}"


def logged_in() -> bool:
    token = settings().token
    return bool(token) and (_bearer_ok(token) or _session_ok(token))


def can_read() -> bool:
    cfg = settings()
    return cfg["server"]["public"] or not cfg.token or logged_in()


def can_write() -> bool:
    return not settings().token or logged_in()


def csrf_cookie() -> str:
    """The double-submit token every page's forms carry; made on first sight."""
    value = request.environ.get("lightci.csrf") or request.get_cookie(CSRF_COOKIE) or ""
    if len(value) < 16:
        value = secrets.token_urlsafe(24)
        response.set_cookie(CSRF_COOKIE, value, path="/", httponly=True, samesite="lax")
    request.environ["lightci.csrf"] = value
    return value


def csrf_field_ok() -> bool:
    given = request.forms.getunicode("csrf", default="")
    return bool(given) and same(given, request.get_cookie(CSRF_COOKIE) or "")


def _cross_site() -> bool:
    return request.get_header("Sec-Fetch-Site", "") == "cross-site"


def require_read() -> None:
    if not can_read():
        raise UserError("this server is not public: send Authorization: Bearer <token>", 401)


def require_write() -> None:
    """API writes: the bearer token, or the login cookie plus the X-CSRF-Token header."""
    if _cross_site():
        raise UserError("cross-site requests cannot change builds", 403)
    token = settings().token
    if not token or _bearer_ok(token):
        return
    if _session_ok(token):
        given = request.get_header("X-CSRF-Token", "")
        if given and same(given, request.get_cookie(CSRF_COOKIE) or ""):
            return
        raise UserError("missing or wrong X-CSRF-Token header for a cookie login", 403)
    raise UserError("this action needs the token: send Authorization: Bearer <token>", 401)


def form_checked() -> None:
    """Browser forms: same-site, the CSRF field, and a login when a token is set."""
    if _cross_site() or not csrf_field_ok():
        raise UserError("the form expired or came from another site: reload and try again", 403)
    if not can_write():  # back to the page the form was on: /jobs/app/trigger -> /jobs/app
        page_path = request.path.rsplit("/", 1)[0]
        raise bottle.redirect("/login?" + urlencode({"next": page_path}), 303)


def html_read() -> None:
    """Pages of a server that is not public send a person to the login form."""
    if not can_read():
        raise bottle.redirect("/login?" + urlencode({"next": request.fullpath}), 303)


def local_path(target: str) -> str:
    """Only paths on this server after a login: never //evil.example or https://..."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
