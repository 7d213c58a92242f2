"""The Bottle app: error answers, safe headers, the URL table of every route module; serving.

Database connections: peewee keeps one per thread and waitress has a fixed
pool of threads, so each waitress thread opens its connection once and keeps
it. A Server-Sent Events stream is a generator that runs after the handler
returned (after_request hooks have run by then); it uses the same thread's
connection, so nothing closes it under the stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import bottle
import waitress
from bottle import HTTPResponse, request, response

from lightci import models, proxy
from lightci.config import settings
from lightci.errors import UserError
from lightci.web import api, auth, events, hooks, pages
from lightci.web.answers import json_answer, wants_json
from lightci.web.render import page, page_vars, template

log = logging.getLogger(__name__)

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


def _guard(callback: Callable) -> Callable:
    """Turn a UserError into its 4xx answer, and any bug into a logged 500."""

    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except HTTPResponse:
            raise
        except UserError as exc:
            return _error_page(exc.status, str(exc), exc.retry_after)
        except Exception:  # the edge of the app: a bug becomes a 500, never a dead thread
            log.exception("%s %s failed", request.method, request.path)
            return _error_page(500, STATUS_TEXT[500])

    return wrapper


def _safe_headers() -> None:
    # A log is text/plain and may hold anything: the browser must never sniff it into HTML.
    response.set_header("X-Content-Type-Options", "nosniff")
    response.set_header("Referrer-Policy", "same-origin")


def _status_error(status: int) -> Callable:
    def handler(error: bottle.HTTPError) -> str:
        body = error.body
        message = body if isinstance(body, str) and body else STATUS_TEXT[status]
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
    for module in (hooks, api, events, pages, proxy):
        module.install(app)
    return app


def serve(host: str, port: int) -> None:
    """Serve the app with waitress; [server] threads bounds the live logs at once."""
    cfg = settings()
    models.bind(cfg)
    cap = cfg["server"]["max_body"]
    # The app answers 413 with a JSON reason; waitress is the backstop for liars
    # about Content-Length and for chunked bodies.
    bottle.BaseRequest.MEMFILE_MAX = cap + 1
    waitress.serve(
        make_app(),
        host=host,
        port=port,
        threads=cfg["server"]["threads"],
        max_request_body_size=cap + 65536,
        connection_limit=max(100, cfg["server"]["threads"] * 8),
        backlog=1024,
        asyncore_use_poll=True,
        ident="lightci",
        _quiet=True,
    )
