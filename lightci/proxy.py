"""The built-in proxy: /apps/<job>/<path> streamed to the job's live container.

The target is read per request (routes.route: the job table, cached for half
a second), so every web process follows a switch on its own; the replaced
container keeps serving for [deploy] drain seconds, so requests that are
already in flight finish. Responses are streamed as they arrive (server-sent
events work); each waitress thread keeps one keep-alive connection per job.

An app must never act as the person logged in to lightci: lightci's cookies
and the Authorization header never reach it, its Set-Cookie can neither set nor
clear lightci's cookies, and what a client claims about the route (X-Real-IP,
X-Forwarded-*, Forwarded) is replaced by what this server saw. On lightci's own
origin an app's scripts still share that origin; `[server] apps_port` gives the
apps one of their own.

``install(app)`` adds /apps/<job>/... to a Bottle app.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import bottle
from bottle import HTTPResponse, request

from lightci import jobs, routes
from lightci.config import settings

CHUNK = 64 * 1024
TIMEOUT = 300  # seconds an upstream may stay silent (long polls, slow reports)
CONNECT_TIMEOUT = 5  # seconds to reach it: a removed container's address answers nothing
# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
# lightci's credentials and the client's claims about the route: never passed to an app.
NOT_FORWARDED = {"authorization", "forwarded", "x-real-ip"}
# An app's answers that could reach lightci's pages: a service worker for the whole
# origin, or wiping the cookies of the whole site (lightci's login among them).
NOT_RETURNED = {"service-worker-allowed", "clear-site-data"}
COOKIE_PREFIX = "lightci_"
RETRYABLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}

_local = threading.local()


def install(app: bottle.Bottle) -> None:
    """Add /apps/<job>/... (the deployment API is lightci.web.api's)."""
    app.route("/apps/<job>", "ANY", _to_slash)
    app.route("/apps/<job>/", "ANY", forward)
    app.route("/apps/<job>/<path:path>", "ANY", forward)


def _json(status: int, data: Any) -> HTTPResponse:
    return HTTPResponse(
        json.dumps(data), status=status, headers={"Content-Type": "application/json"}
    )


def _to_slash(job: str):
    query = request.query_string
    bottle.redirect(f"{request.script_name}apps/{job}/" + (f"?{query}" if query else ""), 308)


# -- forwarding --------------------------------------------------------------------


def forward(job: str, path: str = ""):
    jobs.check_name(job)
    address = routes.route(job)
    if not address and job not in jobs.names(settings()):
        return _json(404, {"error": f"no job {job!r}"})
    if not address:
        return _json(503, {"error": f"job {job!r} has no live deployment"})
    environ = request.environ
    target = _target(environ, job, path)
    headers = _request_headers(environ, job)
    body = _body(environ)
    method = request.method
    for attempt in (1, 2):
        conn, reused = _connection(job, address)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            if body is not None:
                for chunk in body:
                    conn.send(chunk)
            upstream = conn.getresponse()
            break
        except RETRYABLE as exc:
            _drop(job)
            # A kept-alive connection the app closed meanwhile: try once on a fresh one.
            if attempt == 1 and reused and method in IDEMPOTENT:
                continue
            return _bad_gateway(job, address, exc)
        except (OSError, http.client.HTTPException) as exc:
            _drop(job)
            return _bad_gateway(job, address, exc)
    reason = upstream.reason or _phrase(upstream.status)
    reply = HTTPResponse(status=f"{upstream.status} {reason}")
    for name, value in _response_headers(upstream.getheaders()):
        reply.add_header(name, value)
    reply.body = _stream(job, conn, upstream)
    return reply


def _target(environ: dict[str, Any], job: str, path: str) -> str:
    """The path and query as the client sent them, below /apps/<job> (%2F stays %2F)."""
    raw = environ.get("REQUEST_URI", "")
    prefix = f"{environ.get('SCRIPT_NAME', '')}/apps/{job}/"
    if raw.startswith(prefix):
        return raw[len(prefix) - 1 :]
    target = "/" + quote(path.encode("latin-1", "replace"), safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING")
    return f"{target}?{query}" if query else target


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _request_headers(environ: dict[str, Any], job: str) -> list[tuple[str, str]]:
    """The client's headers for the app: no hop-by-hop ones, none of lightci's credentials.

    Waitress already applied (or, from anyone but [server] trusted_proxy, dropped)
    X-Forwarded-*: REMOTE_ADDR, the scheme and HTTP_HOST are what the route really is.
    """
    dropped = HOP_BY_HOP | NOT_FORWARDED | _tokens(environ.get("HTTP_CONNECTION", ""))
    headers = []
    for key, value in environ.items():
        if not key.startswith("HTTP_"):
            continue
        name = key[5:].replace("_", "-").title()
        lower = name.lower()
        if lower in dropped or lower.startswith("x-forwarded-"):
            continue
        if lower == "cookie":
            value = _app_cookies(value)
            if not value:
                continue
        headers.append((name, value))
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            headers.append((name, environ[key]))
    client = environ.get("REMOTE_ADDR", "")
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    if "HTTP_HOST" not in environ:
        headers.append(("Host", host))
    return headers + [
        ("X-Forwarded-For", client),
        ("X-Forwarded-Proto", environ["wsgi.url_scheme"]),
        ("X-Forwarded-Host", host),
        ("X-Forwarded-Prefix", f"{environ.get('SCRIPT_NAME', '')}/apps/{job}"),
        ("X-Real-Ip", client),
    ]


def _response_headers(given: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The app's headers for the browser, less hop-by-hop ones and any reach into lightci."""
    dropped = HOP_BY_HOP | NOT_RETURNED
    for name, value in given:
        if name.lower() == "connection":
            dropped = dropped | _tokens(value)
    return [
        (name, value)
        for name, value in given
        if name.lower() not in dropped
        and not (name.lower() == "set-cookie" and _is_lightci(value.split(";", 1)[0]))
    ]


def _tokens(connection: str) -> set[str]:
    """The header names a Connection header nominates (RFC 9110 section 7.6.1)."""
    return {token.strip().lower() for token in connection.split(",") if token.strip()}


def _is_lightci(pair: str) -> bool:
    """A cookie of lightci's: name=value, or a bare value, whose name starts with lightci_."""
    return pair.partition("=")[0].strip().lower().startswith(COOKIE_PREFIX)


def _app_cookies(header: str) -> str:
    """The Cookie header less lightci's cookies (waitress joins repeated headers with ', ')."""
    kept = []
    for part in header.split(";"):
        pieces = [piece for piece in part.split(",") if not _is_lightci(piece)]
        if pieces:
            kept.append(",".join(pieces))
    return ";".join(kept).strip()


def _body(environ: dict[str, Any]) -> list[bytes] | None:
    """The request body in chunks (read up front, so a retry can send it again)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if not length:
        return None
    stream, chunks = environ["wsgi.input"], []
    while length > 0:
        chunk = stream.read(min(CHUNK, length))
        if not chunk:
            break
        chunks.append(chunk)
        length -= len(chunk)
    return chunks


def _stream(job: str, conn: http.client.HTTPConnection, upstream) -> Iterator[bytes]:
    """The response as it arrives; the connection goes back to the thread's pool when whole."""
    complete = False
    try:
        while True:
            chunk = upstream.read1(CHUNK)
            if not chunk:
                complete = True
                return
            yield chunk
    except (OSError, http.client.HTTPException):
        return
    finally:
        upstream.close()
        if not complete:
            conn.close()
            _drop(job, conn)


class _Upstream(http.client.HTTPConnection):
    """A connection to an app that gives up connecting long before it gives up waiting."""

    def connect(self) -> None:
        self.timeout = CONNECT_TIMEOUT
        super().connect()
        self.timeout = TIMEOUT
        self.sock.settimeout(TIMEOUT)


def _connection(job: str, address: str) -> tuple[http.client.HTTPConnection, bool]:
    """This thread's connection to the job's container; (connection, reused)."""
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    held = pool.get(job)
    if held is not None and held[0] == address:
        return held[1], held[1].sock is not None
    if held is not None:
        held[1].close()  # the route moved: the old container is draining
    host, _, port = address.rpartition(":")
    conn = _Upstream(host, int(port), timeout=TIMEOUT)
    pool[job] = (address, conn)
    return conn, False


def _drop(job: str, conn: http.client.HTTPConnection | None = None) -> None:
    pool = getattr(_local, "pool", {})
    held = pool.get(job)
    if held is not None and (conn is None or held[1] is conn):
        held[1].close()
        pool.pop(job, None)


def _bad_gateway(job: str, address: str, exc: Exception) -> HTTPResponse:
    return _json(502, {"error": f"job {job!r}: its container at {address} failed: {exc!r}"})
