"""The Bottle app: error answers, safe headers, the URL table of every route module; serving.

Database connections: peewee keeps one per thread and waitress has a fixed
pool of threads, so each waitress thread opens its connection once and keeps
it. A Server-Sent Events stream is a generator that runs after the handler
returned (after_request hooks have run by then); it uses the same thread's
connection, so nothing closes it under the stream.
"""

from __future__ import annotations

import functools
import json
import logging
import resource
import threading
from collections.abc import Callable
from typing import Any

import bottle
import waitress
from bottle import HTTPResponse, request, response
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer
from waitress.task import ThreadedTaskDispatcher

from lightci import models, proxy
from lightci.config import Settings, settings
from lightci.errors import UserError
from lightci.web import api, auth, badges, downloads, events, hooks, jobedit, pages, release
from lightci.web.answers import json_answer, wants_json
from lightci.web.render import page, page_vars, template

log = logging.getLogger(__name__)

# Sockets a listener keeps open at once (waitress's default, 100, fell to a slowloris).
CONNECTIONS = 1000
OPEN_FILES = 4096  # the soft open-files limit serve raises to, within the hard one
# Seconds of silence before waitress closes a connection that has no request in
# progress (idle keep-alive, or half a request); it looks every CLEANUP_INTERVAL s.
# Live logs are never idle: they ping every events.SSE_PING seconds.
IDLE_TIMEOUT = 20
CLEANUP_INTERVAL = 5
# Seconds waitress's socket loop sleeps when no socket stirs (its default: 1). A
# request wakes it at once; only the idle-connection cleanup waits for the turn.
LOOP_TIMEOUT = CLEANUP_INTERVAL
# ... and while no connection is open at all: nothing to clean up (see _serve).
REST_TIMEOUT = 3600.0
# What [server] trusted_proxy may tell: the scheme, the host and the client's address.
TRUSTED_HEADERS = {"x-forwarded-proto", "x-forwarded-host", "x-forwarded-for"}

STATUS_TEXT = {
    400: "bad request",
    404: "no such page: see GET /api/jobs and SPEC section 7",
    405: "method not allowed",
    413: "request body too large",
    500: "internal error: see the server log",
}


def _error_page(status: int, message: str, retry_after: int | None = None):
    message = auth.public_text(message)
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    if wants_json():
        return json_answer(status, {"error": message}, headers=headers)
    response.status = status
    for name, value in headers.items():
        response.set_header(name, value)
    return page("error.tpl", title=f"{status}", status=status, message=message)


def _guard(callback: Callable, answer: Callable = _error_page) -> Callable:
    """Turn a UserError into its 4xx answer, and any bug into a logged 500."""

    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except HTTPResponse:
            raise
        except UserError as exc:
            return answer(exc.status, str(exc), exc.retry_after)
        except Exception:  # the edge of the app: a bug becomes a 500, never a dead thread
            log.exception("%s %s failed", request.method, request.path)
            return answer(500, STATUS_TEXT[500])

    return wrapper


def _json_error(status: int, message: str, retry_after: int | None = None) -> HTTPResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return json_answer(status, {"error": message}, headers=headers)


def _safe_headers() -> None:
    # A log is text/plain and may hold anything: the browser must never sniff it into HTML.
    response.set_header("X-Content-Type-Options", "nosniff")
    response.set_header("Referrer-Policy", "same-origin")


def _status_error(status: int) -> Callable:
    def handler(error: bottle.HTTPError) -> str:
        body = error.body
        message = body if isinstance(body, str) and body else STATUS_TEXT[status]
        allowed = error.headers.get("Allow") if status == 405 else None
        if allowed:  # bottle's own words were "Method not allowed."
            message = f"{request.method} is not allowed on {request.path[:200]}: use {allowed}"
        if wants_json():
            response.content_type = "application/json"
            return json.dumps({"error": message})
        return template("error.tpl", **page_vars(title=str(status)), status=status, message=message)

    return handler


def make_app() -> bottle.Bottle:
    """The whole site: pages, API, webhooks, live logs and the /apps proxy."""
    app = bottle.Bottle()
    app.install(_guard)
    app.add_hook("after_request", _safe_headers)
    app.error_handler.update({status: _status_error(status) for status in STATUS_TEXT})
    for module in (hooks, api, jobedit, events, pages, release, downloads, badges, proxy):
        module.install(app)
    return app


def make_apps_app() -> bottle.Bottle:
    """The apps' own origin ([server] apps_port): /apps/<job>/... and nothing of lightci's."""
    app = bottle.Bottle()
    app.install(functools.partial(_guard, answer=_json_error))
    app.error_handler.update(
        {status: _apps_error(status) for status in STATUS_TEXT if status != 404}
        | {404: _apps_error(404, "no such page: apps are at /apps/<job>/")}
    )
    proxy.install(app)
    return app


def _apps_error(status: int, message: str = "") -> Callable:
    def handler(error: bottle.HTTPError) -> str:
        response.content_type = "application/json"
        return json.dumps({"error": message or STATUS_TEXT[status]})

    return handler


class GrowingDispatcher(ThreadedTaskDispatcher):
    """waitress's request threads, started as requests need them, up to [server] threads.

    waitress starts them all at once; an idle server then holds 32 threads that
    never ran. Here a request that finds no idle thread starts one, and threads
    stay once started (a live log holds one for as long as it is open).
    """

    def __init__(self, limit: int):
        super().__init__()
        self.limit = max(1, limit)

    def add_task(self, task) -> None:
        with self.lock:
            running = len(self.threads) - self.stop_count
            busy = self.active_count + len(self.queue)
        if busy >= running and running < self.limit:
            super().set_thread_count(running + 1)
        super().add_task(task)


class Listener:
    """One bound waitress server; `name` is "lightci" or "apps"."""

    def __init__(self, server, name: str, host: str, port: int):
        self.server, self.name = server, name
        self.url = f"http://{host}:{port}"


def listen(host: str, port: int) -> list[Listener]:
    """Bind lightci's port, and [server] apps_port when set, before anything else starts.

    A taken port is a UserError, so `serve` and `web` end with one clear line
    instead of running on without a web server.
    """
    cfg = settings()
    models.bind(cfg)
    # The app answers 413 with a JSON reason; waitress is the backstop for liars
    # about Content-Length and for chunked bodies.
    bottle.BaseRequest.MEMFILE_MAX = cfg["server"]["max_body"] + 1
    wanted = [("lightci", make_app, host, port, "--port or [server] port")]
    if cfg["server"]["apps_port"]:
        apps_host = cfg["server"]["apps_host"] or host
        apps_port = cfg["server"]["apps_port"]
        wanted.append(("apps", make_apps_app, apps_host, apps_port, "[server] apps_port"))
    listeners: list[Listener] = []
    for name, make, at_host, at_port, setting in wanted:
        if not 0 <= at_port <= 65535:  # the socket would take 99999 as 34463, and say nothing
            raise UserError(f"port {at_port} is not a TCP port (0-65535) ({setting})")
        try:
            server = waitress.create_server(
                make(),
                _dispatcher=GrowingDispatcher(cfg["server"]["threads"]),
                **_adjustments(cfg, at_host, at_port),
            )
        except (OSError, ValueError) as exc:  # ValueError: waitress's "Invalid host/port"
            for bound in listeners:
                bound.server.close()
            reason = getattr(exc, "strerror", None) or str(exc)
            raise UserError(f"cannot listen on {at_host}:{at_port}: {reason} ({setting})") from None
        listeners.append(Listener(server, name, at_host, at_port))
    return listeners


def _adjustments(cfg: Settings, host: str, port: int) -> dict[str, Any]:
    """waitress's settings: the same for lightci's listener and the apps' one."""
    proxy_from = cfg["server"]["trusted_proxy"]
    trusted = (
        {
            "trusted_proxy": proxy_from,
            "trusted_proxy_count": 1,
            "trusted_proxy_headers": TRUSTED_HEADERS,
        }
        if proxy_from
        else {}
    )
    return {
        "host": host,
        "port": port,
        "threads": cfg["server"]["threads"],
        "max_request_body_size": cfg["server"]["max_body"] + 65536,
        # Idle and half-sent connections cost a file descriptor, never a thread:
        # room for many, and each is closed after IDLE_TIMEOUT seconds of silence.
        "connection_limit": _connection_limit(),
        "channel_timeout": IDLE_TIMEOUT,
        "cleanup_interval": CLEANUP_INTERVAL,
        "clear_untrusted_proxy_headers": True,
        "backlog": 1024,
        "asyncore_use_poll": True,
        "asyncore_loop_timeout": LOOP_TIMEOUT,
        "ident": "lightci",
        **trusted,
    }


def _connection_limit() -> int:
    """CONNECTIONS a listener, within the open-files limit (raised toward the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < OPEN_FILES:
        raised = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit from %s", soft)
    if soft == resource.RLIM_INFINITY:
        return CONNECTIONS
    # Two listeners, plus the database, logs and builds' pipes.
    return max(100, min(CONNECTIONS, (soft - 256) // 2))


def run(listeners: list[Listener]) -> None:
    """Serve every listener until the process ends (the first one in this thread)."""
    for extra in listeners[1:]:
        threading.Thread(
            target=_serve, args=(extra.server,), name="lightci-apps", daemon=True
        ).start()
    _serve(listeners[0].server)


def _serve(server) -> None:
    """waitress's socket loop (its server.run), asleep while no connection is open.

    waitress wakes every asyncore_loop_timeout seconds to close idle
    connections; with none open there is nothing to close, and on this kind of
    VM every wake of an idle thread costs 4-10 ms of CPU. A new connection
    wakes the loop anyway, and from then on it looks every LOOP_TIMEOUT s.
    """
    sockets = server.map if isinstance(server, MultiSocketServer) else server._map
    try:
        while sockets:
            idle = not any(isinstance(d, HTTPChannel) for d in list(sockets.values()))
            wasyncore.poll2(REST_TIMEOUT if idle else LOOP_TIMEOUT, sockets)
    except (SystemExit, KeyboardInterrupt):
        server.task_dispatcher.shutdown()
