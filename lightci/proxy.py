"""The built-in proxy: /apps/<job>/<path> streamed to the job's live container.

The target is read per request (routes.route: the job table, cached for half
a second), so every web process follows a switch on its own; the replaced
container keeps serving for [deploy] drain seconds, so requests that are
already in flight finish. Responses are streamed as they arrive (server-sent
events work); each waitress thread keeps one keep-alive connection per job.

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

CHUNK = 64 * 1024
TIMEOUT = 300  # seconds an upstream may stay silent (long polls, slow reports)
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
    for name, value in upstream.getheaders():
        if name.lower() not in HOP_BY_HOP:
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
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
            if name.lower() not in HOP_BY_HOP and name.lower() not in ("x-forwarded-prefix",):
                headers.append((name, value))
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            headers.append((name, environ[key]))
    client = environ.get("REMOTE_ADDR", "")
    seen = environ.get("HTTP_X_FORWARDED_FOR")
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    headers = [(n, v) for n, v in headers if not n.lower().startswith("x-forwarded-")] + [
        ("X-Forwarded-For", f"{seen}, {client}" if seen else client),
        ("X-Forwarded-Proto", environ.get("HTTP_X_FORWARDED_PROTO") or environ["wsgi.url_scheme"]),
        ("X-Forwarded-Host", environ.get("HTTP_X_FORWARDED_HOST") or host),
        ("X-Forwarded-Prefix", f"{environ.get('SCRIPT_NAME', '')}/apps/{job}"),
    ]
    if not any(n.lower() == "host" for n, _ in headers):
        headers.append(("Host", host))
    if not any(n.lower() == "x-real-ip" for n, _ in headers):
        headers.append(("X-Real-Ip", client))
    return headers


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
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
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
