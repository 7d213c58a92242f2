"""The Bottle app: webhooks, the JSON API, Server-Sent Events and the HTML pages.

Handlers are thin: they read the request, call one domain function (the same
``builds.trigger / cancel / retry / status`` the CLI calls) and render. A
``UserError`` becomes JSON ``{"error": ...}`` with its status (or the page
with the message, for a browser form).

Database connections: peewee keeps one per thread and waitress has a fixed
pool of threads, so each waitress thread opens its connection once and keeps
it. A Server-Sent Events stream is a generator that runs after the handler
returned (after_request hooks have run by then); it uses the same thread's
connection, so nothing closes it under the stream.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import bottle
from bottle import HTTPResponse, request, response

from lightci import UserError, __version__, builds, jobs, models, webhooks, workspace
from lightci.config import settings
from lightci.models import ACTIVE, QUEUED, STATES, Build, Stage, as_dict, db, run_sql

log = logging.getLogger(__name__)


def _views() -> Path:
    """The source tree's views/, else the installed copy (setup.cfg data_files)."""
    package_parent = Path(__file__).resolve().parent.parent
    for candidate in (
        package_parent / "views",
        Path(sys.prefix) / "share" / "lightci" / "views",
        package_parent / "share" / "lightci" / "views",  # zipapp (shiv)
    ):
        if (candidate / "base.tpl").exists():
            return candidate
    return package_parent / "views"


VIEWS = _views()
STATIC = VIEWS / "static"
bottle.TEMPLATE_PATH[:] = [str(VIEWS)]

SESSION_COOKIE = "lightci_session"
CSRF_COOKIE = "lightci_csrf"
SSE_PING = 15.0  # seconds between keep-alive comments on an idle event stream
SSE_POLL = 0.2  # seconds between looks at a growing log
SSE_STATE_POLL = 0.5  # seconds between looks at the build row
SSE_CHUNK = 256 * 1024  # bytes of log per event at most
SPARE_THREADS = 8  # waitress threads no event stream may hold (at most half of them)
LOG_TAIL = 1024 * 1024  # bytes of log the build page loads before following
DASHBOARD_QUEUED = 50  # queued builds the dashboard lists; it counts the rest
HISTOGRAM_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)

app = bottle.Bottle()


# -- errors and auth ------------------------------------------------------------


def _json(status: int, data: Any) -> HTTPResponse:
    headers = {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"}
    return HTTPResponse(json.dumps(data), status=status, headers=headers)


def _wants_json() -> bool:
    path = request.path
    return path.startswith(("/api/", "/hooks/")) or path in ("/health", "/metrics")


def _error_page(status: int, message: str) -> str | HTTPResponse:
    if _wants_json():
        return _json(status, {"error": message})
    response.status = status
    return page("error.tpl", title=f"{status}", status=status, message=message)


def _guard(callback: Callable) -> Callable:
    """Turn a UserError into its 4xx answer, and any bug into a logged JSON 500."""

    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except HTTPResponse:
            raise
        except UserError as exc:
            return _error_page(exc.status, str(exc))
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return _error_page(500, "internal error: see the server log")

    return wrapper


app.install(_guard)


@app.hook("after_request")
def _safe_headers() -> None:
    # A log is text/plain and may hold anything: the browser must never sniff it into HTML.
    response.set_header("X-Content-Type-Options", "nosniff")
    response.set_header("Referrer-Policy", "same-origin")


def _status_error(status: int, fallback: str) -> Callable:
    def handler(error: bottle.HTTPError) -> str:
        message = error.body if isinstance(error.body, str) and error.body else fallback
        if _wants_json():
            response.content_type = "application/json"
            return json.dumps({"error": message})
        return bottle.template(
            "error.tpl", **_page_vars(title=str(status)), status=status, message=message
        )

    return handler


app.error_handler.update(
    {
        400: _status_error(400, "bad request"),
        404: _status_error(404, "no such page: see GET /api/jobs and SPEC section 7"),
        405: _status_error(405, "method not allowed"),
        413: _status_error(413, "request body too large"),
        500: _status_error(500, "internal error: see the server log"),
    }
)


def _sign(token: str, purpose: str, nonce: str) -> str:
    return hmac.new(token.encode(), f"{purpose}:{nonce}".encode(), hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def _bearer_ok(token: str) -> bool:
    scheme, _, given = request.get_header("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and _same(given.strip(), token)


def _session_ok(token: str) -> bool:
    """The login cookie: a nonce signed with the token (a new token logs everyone out)."""
    nonce, _, signature = (request.get_cookie(SESSION_COOKIE) or "").partition(".")
    return bool(nonce and signature) and _same(signature, _sign(token, "session", nonce))


def logged_in() -> bool:
    token = settings().token
    return bool(token) and (_bearer_ok(token) or _session_ok(token))


def can_read() -> bool:
    cfg = settings()
    return cfg["server"]["public"] or not cfg.token or logged_in()


def can_write() -> bool:
    return not settings().token or logged_in()


def _csrf_cookie() -> str:
    """The double-submit token every page's forms carry; made on first sight."""
    value = request.environ.get("lightci.csrf") or request.get_cookie(CSRF_COOKIE) or ""
    if len(value) < 16:
        value = secrets.token_urlsafe(24)
        response.set_cookie(CSRF_COOKIE, value, path="/", httponly=True, samesite="lax")
    request.environ["lightci.csrf"] = value
    return value


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
        if given and _same(given, request.get_cookie(CSRF_COOKIE) or ""):
            return
        raise UserError("missing or wrong X-CSRF-Token header for a cookie login", 403)
    raise UserError("this action needs the token: send Authorization: Bearer <token>", 401)


def _form_checked() -> None:
    """Browser forms: same-site, the CSRF field, and a login when a token is set."""
    given = request.forms.getunicode("csrf", default="")
    if _cross_site() or not given or not _same(given, request.get_cookie(CSRF_COOKIE) or ""):
        raise UserError("the form expired or came from another site: reload and try again", 403)
    if not can_write():  # back to the page the form was on: /jobs/app/trigger -> /jobs/app
        page_path = request.path.rsplit("/", 1)[0]
        raise bottle.redirect("/login?" + urlencode({"next": page_path}), 303)


# -- formatting for the pages ----------------------------------------------------


def ago(ts: float | None) -> str:
    if not ts:
        return ""
    return span(time.time() - ts) + " ago"


def span(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def stamp(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""


def _page_vars(**kwargs) -> dict[str, Any]:
    cfg = settings()
    return {
        "ago": ago,
        "span": span,
        "stamp": stamp,
        "iso": models.iso,
        "quote": quote,
        "version": __version__,
        "token_set": bool(cfg.token),
        "logged_in": logged_in(),
        "can_write": can_write(),
        "path": request.path,
        "csrf": "",
        "error": "",
        **kwargs,
    }


def page(name: str, **kwargs) -> str:
    response.set_header("Cache-Control", "no-store")
    response.set_header("X-Frame-Options", "DENY")
    response.set_header(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    )
    return bottle.template(name, **_page_vars(csrf=_csrf_cookie(), **kwargs))


def _html_read() -> None:
    if not can_read():
        raise bottle.redirect("/login?" + urlencode({"next": request.fullpath}), 303)


# -- health and metrics ------------------------------------------------------------


@app.get("/health")
def health():
    try:
        db.execute_sql("SELECT 1 FROM build LIMIT 1").fetchall()  # the table, not only a socket
    except Exception as exc:
        return _json(503, {"status": "unavailable", "error": f"database: {exc}"})
    try:
        from lightci import tasks

        tasks.pending()
    except Exception as exc:
        return _json(503, {"status": "unavailable", "error": f"queue: {exc}"})
    return {"status": "ok"}


HISTOGRAMS = (
    (
        "lightci_queue_wait_seconds",
        "Seconds builds in the table waited for a slot (those that started).",
        "started_at - queued_at",
    ),
    (
        "lightci_build_duration_seconds",
        "Seconds from start to end of the finished builds in the table.",
        "finished_at - started_at",
    ),
)


class _Settled:
    """The histograms' share of settled builds, summed once instead of at every scrape.

    Every build older than the oldest queued or running one is final and its
    times never change, so its share is kept and only newer rows are read
    again. Rows that retention removes later stay counted: like a Prometheus
    counter, the histograms only grow while the process lives.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.database: str | None = None
        self.below = 0
        self.kept: list[float] = []  # bucket counts, count and sum of each histogram


_settled = _Settled()


def _histogram_row(low: int, high: int | None) -> list[float]:
    """Bucket counts, count and sum of both histograms over builds low <= id < high."""
    columns = []
    for _, _, expr in HISTOGRAMS:
        columns += [f"SUM(CASE WHEN {expr} <= {b} THEN 1 ELSE 0 END)" for b in HISTOGRAM_BUCKETS]
        columns += [f"COUNT({expr})", f"COALESCE(SUM({expr}), 0)"]
    where, args = "started_at IS NOT NULL AND id >= ?", [low]
    if high is not None:
        where, args = where + " AND id < ?", [low, high]
    sql = f"SELECT {', '.join(columns)} FROM build WHERE {where}"
    return [v or 0 for v in run_sql(sql, *args).fetchone()]


def _histograms() -> list[str]:
    with _settled.lock:
        if _settled.database != db.obj.database:  # another home (tests): start over
            width = len(HISTOGRAMS) * (len(HISTOGRAM_BUCKETS) + 2)
            _settled.database, _settled.below, _settled.kept = db.obj.database, 0, [0] * width
        open_ids = "SELECT MIN(id) FROM build WHERE status IN ('queued', 'running', 'deploying')"
        first_open = db.execute_sql(open_ids).fetchone()[0]
        if first_open is None:
            first_open = (db.execute_sql("SELECT MAX(id) FROM build").fetchone()[0] or 0) + 1
        if first_open > _settled.below:
            fresh = _histogram_row(_settled.below, first_open)
            _settled.kept = [a + b for a, b in zip(_settled.kept, fresh, strict=True)]
            _settled.below = first_open
        newer = _histogram_row(_settled.below, None)
        row = [a + b for a, b in zip(_settled.kept, newer, strict=True)]
    lines, width = [], len(HISTOGRAM_BUCKETS) + 2
    for n, (name, help_text, _) in enumerate(HISTOGRAMS):
        values = row[n * width : (n + 1) * width]
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for bound, count in zip(HISTOGRAM_BUCKETS, values, strict=False):
            lines.append(f'{name}_bucket{{le="{bound}"}} {count}')
        total, seconds = values[-2], values[-1]
        lines.append(f'{name}_bucket{{le="+Inf"}} {total}')
        lines.append(f"{name}_sum {round(seconds, 3)}")
        lines.append(f"{name}_count {total}")
    return lines


@app.get("/metrics")
def metrics():
    require_read()
    cfg = settings()
    counts = dict(db.execute_sql("SELECT status, COUNT(*) FROM build GROUP BY status").fetchall())
    lines = [
        "# HELP lightci_builds Builds in the job table by state.",
        "# TYPE lightci_builds gauge",
    ]
    lines += [f'lightci_builds{{state="{s}"}} {counts.get(s, 0)}' for s in STATES]
    used = sum(counts.get(s, 0) for s in ACTIVE)
    lines += [
        "# HELP lightci_queue_length Builds waiting for a slot.",
        "# TYPE lightci_queue_length gauge",
        f"lightci_queue_length {counts.get(QUEUED, 0)}",
        "# HELP lightci_slots_used Slots held by running or deploying builds.",
        "# TYPE lightci_slots_used gauge",
        f"lightci_slots_used {used}",
        "# HELP lightci_slots Slots configured ([builds] slots).",
        "# TYPE lightci_slots gauge",
        f"lightci_slots {cfg.slots}",
    ]
    lines += _histograms()
    if proxy is not None:  # Docker deploys: is each live container healthy
        lines.append(proxy.deploy.metrics().rstrip("\n"))
    response.content_type = "text/plain; version=0.0.4; charset=utf-8"
    return "\n".join(lines) + "\n"


# -- webhooks --------------------------------------------------------------------


def _raw_body(limit: int) -> bytes:
    """The body, refused with 413 past the cap before it is read into memory."""
    if request.content_length > limit:
        raise UserError(f"body of {request.content_length} bytes is over the {limit} cap", 413)
    body = request.body.read(limit + 1)
    if len(body) > limit:
        raise UserError(f"body is over the {limit} byte cap ([server] max_body)", 413)
    return body


@app.post("/hooks/<name>")
def hook(name: str):
    """Answer fast: check, commit the row, wake a worker; no git and no disk here."""
    cfg = settings()
    job = jobs.load(cfg, name)
    body = _raw_body(cfg["server"]["max_body"])
    verdict = webhooks.judge(
        job, request.headers, body, request.content_type, cfg["webhooks"]["secret"]
    )
    if verdict.push is None:
        return {"skipped": verdict.skipped}
    push = verdict.push
    delivery = f"{push.forge}:{job.name}:{push.delivery}" if push.delivery else None
    if delivery:
        # Plain SQL on the unique index: every push asks; peewee's query building costs more.
        seen = run_sql("SELECT id FROM build WHERE delivery = ?", delivery)
        first = seen.fetchone()
        if first is not None:
            return {"skipped": f"redelivery of {push.delivery}", "builds": [first[0]]}
    cap = cfg["server"]["max_queued"]
    if cap and builds.queue_length() >= cap:
        return HTTPResponse(
            json.dumps({"error": f"{cap} builds are queued already ([server] max_queued)"}),
            status=429,
            headers={"Content-Type": "application/json", "Retry-After": "30"},
        )
    build = builds.trigger(
        job.name,
        branch=push.tag if push.tag is not None else push.branch,
        commit=push.commit,
        params=push.params,
        trigger=verdict.trigger,
        delivery=delivery,
        cfg=cfg,
    )
    # Two copies of one delivery at once: trigger's write lock lets one row in.
    return _json(202, {"builds": [build.id]})


# -- JSON API --------------------------------------------------------------------


def _body_json() -> dict:
    body = _raw_body(settings()["server"]["max_body"])
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise UserError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise UserError("the body must be a JSON object")
    return data


def _public_repo(url: str) -> str:
    """A repo URL without the user:password@ some people put in it."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def job_dict(job: jobs.Job, last: Build | None = None) -> dict[str, Any]:
    """A job as the API shows it: its settings, never its secrets' values."""
    return {
        "name": job.name,
        "description": job.description,
        "repo": _public_repo(job.repo),
        "branches": job.branches,
        "tags": job.tags,
        "paths": job.paths,
        "key": job.key,
        "stages": job.stages,
        "params": job.params,
        "timeout": job.timeout,
        "queue_timeout": job.queue_timeout,
        "cache": job.cache,
        "supersede": job.supersede,
        "secrets": job.secrets,
        "env": sorted(job.env),
        "docker": job.docker,
        "deploy": {k: v for k, v in job.deploy.items() if k != "env"},
        "webhook": f"/hooks/{job.name}",
        "webhook_secret_set": bool(job.webhook_secret or settings()["webhooks"]["secret"]),
        "last_build": as_dict(last) if last else None,
    }


def last_build(job_name: str) -> Build | None:
    return Build.select().where(Build.job == job_name).order_by(Build.id.desc()).first()


@app.get("/api/jobs")
def api_jobs():
    require_read()
    good, broken = jobs.load_all(settings())
    return {
        "jobs": [job_dict(j, last_build(j.name)) for j in good],
        "broken": [{"name": n, "error": e} for n, e in broken.items()],
    }


@app.get("/api/jobs/<name>")
def api_job(name: str):
    require_read()
    job = jobs.load(settings(), name)
    return job_dict(job, last_build(job.name))


@app.post("/api/jobs/<name>/builds")
def api_trigger(name: str):
    require_write()
    data = _body_json()
    unknown = set(data) - {"branch", "commit", "params"}
    if unknown:
        raise UserError(f"unknown field(s) {sorted(unknown)}: use branch, commit, params")
    build = builds.trigger(
        name,
        branch=data.get("branch"),
        commit=data.get("commit"),
        params=data.get("params"),
        trigger="api",
    )
    return _json(201, as_dict(build))


def _int_arg(name: str, default: int | None) -> int | None:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if abs(value) >= 2**63:
        raise UserError(f"{name} is out of range")
    return value


@app.get("/api/builds")
def api_builds():
    require_read()
    status = request.query.getunicode("status", default="") or None
    if status and status not in STATES:
        raise UserError(f"unknown status {status!r} (one of {', '.join(STATES)})")
    limit = _int_arg("limit", 50)
    if not 1 <= limit <= 500:
        raise UserError("limit must be between 1 and 500")
    rows = builds.listing(
        job=request.query.getunicode("job", default="") or None,
        status=status,
        key=request.query.getunicode("key", default="") or None,
        limit=limit,
        before=_int_arg("before", None),
    )
    return {
        "builds": [as_dict(b) for b in rows],
        "next_before": rows[-1].id if len(rows) == limit else None,
    }


def _stages(build: Build) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {
            "name": s.name,
            "started_at": models.iso(s.started_at),
            "finished_at": models.iso(s.finished_at),
            "duration": round((s.finished_at or now) - s.started_at, 3),
            "exit_code": s.exit_code,
        }
        for s in Stage.select().where(Stage.build == build.id).order_by(Stage.position)
    ]


@app.get("/api/builds/<build_id>")
def api_build(build_id: str):
    require_read()
    build = builds.get(build_id)
    return {**as_dict(build), "stages": _stages(build), "position": builds.position(build)}


def _log_start(size: int) -> int:
    """?offset=N from the start, ?offset=-N for the last N bytes."""
    offset = _int_arg("offset", 0)
    if offset < 0:
        return max(0, size + offset)
    return min(offset, size)


@app.get("/api/builds/<build_id>/log")
def api_log(build_id: str):
    require_read()
    build = builds.get(build_id)
    path = workspace.log_path(settings(), build)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        size, f = 0, None
    else:
        size = os.fstat(f.fileno()).st_size
    start = _log_start(size)
    response.content_type = "text/plain; charset=utf-8"
    response.set_header("Cache-Control", "no-store")
    response.set_header("X-Log-Start", str(start))
    response.set_header("X-Log-Size", str(size))
    response.set_header("X-Build-Status", build.status)
    response.set_header("Content-Length", str(size - start))
    if f is None or size == start:
        if f is not None:
            f.close()
        return ""
    f.seek(start)
    return _file_part(f, size - start)


def _file_part(f, length: int) -> Iterator[bytes]:
    """The first length bytes from f's position, streamed; a log may be 100 MB."""
    try:
        while length > 0:
            chunk = f.read(min(length, 256 * 1024))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk
    finally:
        f.close()


def _sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _state(build: Build) -> dict[str, Any]:
    return {**as_dict(build), "stages": _stages(build)}


@app.get("/api/builds/<build_id>/events")
def api_events(build_id: str):
    """Log lines and state changes as Server-Sent Events; ends when the build is final.

    Each log event carries whole lines as JSON ({"offset", "text"}, so a \\r in
    a progress bar cannot break the stream) and its id is the byte offset
    after it: a reconnecting EventSource resumes where it stopped.
    """
    require_read()
    build = builds.get(build_id)
    path = workspace.log_path(settings(), build)
    resume = request.get_header("Last-Event-ID", "")
    if resume.isdigit():
        offset = int(resume)
    else:
        offset = _log_start(path.stat().st_size if path.exists() else 0)
    threads = settings()["server"]["threads"]
    if not _streams.take(max(1, threads - min(SPARE_THREADS, threads // 2))):
        return HTTPResponse(
            json.dumps({"error": f"too many live logs open: raise [server] threads ({threads})"}),
            status=503,
            headers={"Content-Type": "application/json", "Retry-After": "5"},
        )
    response.content_type = "text/event-stream; charset=utf-8"
    response.set_header("Cache-Control", "no-store")
    response.set_header("X-Accel-Buffering", "no")
    return _stream(build, path, offset)


class _Streams:
    """Open event streams. Each holds a waitress thread until its build ends, so
    some threads are never theirs: webhooks and pages must still answer fast."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open = 0

    def take(self, limit: int) -> bool:
        with self.lock:
            if self.open >= limit:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self.lock:
            self.open -= 1


_streams = _Streams()


def _stream(build: Build, path: Path, offset: int) -> Iterator[bytes]:
    """The stream's body; it holds one of _streams' places until it ends."""
    f = None
    try:
        yield b"retry: 2000\n\n" + _sse("state", _state(build))
        seen = (build.status, build.stage)
        last_sent = last_state = time.monotonic()
        while True:
            final = build.is_final
            if f is None and path.exists():
                f = open(path, "rb")
            data = b""
            if f is not None:
                f.seek(offset)
                data = f.read(SSE_CHUNK)
                if not final and len(data) < SSE_CHUNK:
                    data = data[: data.rfind(b"\n") + 1]  # whole lines while it grows
            if data:
                offset += len(data)
                text = data.decode("utf-8", "replace")
                yield _sse("log", {"offset": offset, "text": text}, offset)
                last_sent = time.monotonic()
                if len(data) == SSE_CHUNK:
                    continue
            elif final:
                yield _sse("end", {"status": build.status})
                return
            now = time.monotonic()
            if now - last_state >= SSE_STATE_POLL:
                last_state = now
                fresh = Build.get_or_none(Build.id == build.id)
                if fresh is None:  # removed by a cleanup while someone watched
                    yield _sse("end", {"status": build.status, "error": "build removed"})
                    return
                build = fresh
                if (build.status, build.stage) != seen:
                    seen = (build.status, build.stage)
                    yield _sse("state", _state(build))
                    last_sent = now
                    continue  # a final state: drain the log's rest at once
            if now - last_sent >= SSE_PING:
                yield b": ping\n\n"
                last_sent = now
            time.sleep(SSE_POLL)
    finally:
        _streams.give_back()
        if f is not None:
            f.close()


@app.post("/api/builds/<build_id>/cancel")
def api_cancel(build_id: str):
    require_write()
    return as_dict(builds.cancel(build_id))


@app.post("/api/builds/<build_id>/retry")
def api_retry(build_id: str):
    require_write()
    return _json(201, as_dict(builds.retry(build_id)))


@app.get("/api/status")
def api_status():
    require_read()
    return builds.status()


@app.post("/api/cleanup")
def api_cleanup():
    require_write()
    data = _body_json()
    days = data.get("days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
        raise UserError('"days" must be a whole number of days (0 or more)')
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise UserError('"dry_run" must be true or false')
    try:
        from lightci import upkeep
    except ImportError:
        upkeep = None
    if upkeep is None or not hasattr(upkeep, "cleanup"):
        raise UserError("cleanup is not available in this installation (no lightci.upkeep)", 503)
    return upkeep.cleanup(days=days, dry_run=dry_run)


# -- HTML pages ------------------------------------------------------------------


@app.get("/static/<filename:path>")
def static(filename: str):
    answer = bottle.static_file(filename, root=str(STATIC))
    answer.set_header("Cache-Control", "public, max-age=3600")
    return answer


@app.get("/")
def dashboard():
    _html_read()
    cfg = settings()
    good, broken = jobs.load_all(cfg)
    rows = [(job, last_build(job.name)) for job in good]
    state = builds.status(queued_limit=DASHBOARD_QUEUED)
    return page(
        "dashboard.tpl",
        title="Dashboard",
        rows=rows,
        broken=broken,
        state=state,
        now=time.time(),
    )


def _trend(history: list[Build]) -> list[dict[str, Any]]:
    """Bars for the duration chart: oldest left, newest right."""
    done = [b for b in reversed(history) if b.started_at and b.finished_at]
    longest = max((b.duration or 0 for b in done), default=0) or 1
    return [{"build": b, "height": max(2.0, 100.0 * (b.duration or 0) / longest)} for b in done]


@app.get("/jobs/<name>")
def job_page(name: str, error: str = "", values: dict | None = None):
    _html_read()
    cfg = settings()
    job = jobs.load(cfg, name)
    before = _int_arg("before", None)
    history = builds.listing(job=job.name, limit=50, before=before)
    trend_rows = history if before is None else builds.listing(job=job.name, limit=50)
    total = Build.select().where(Build.job == job.name).count()
    return page(
        "job.tpl",
        title=job.name,
        job=job,
        history=history,
        trend=_trend(trend_rows),
        total=total,
        next_before=history[-1].id if len(history) == 50 else None,
        error=error,
        values=values or {"branch": "", "commit": "", "params": dict(job.params)},
        webhook_secret_set=bool(job.webhook_secret or cfg["webhooks"]["secret"]),
        public_url=request.urlparts.scheme + "://" + request.urlparts.netloc,
    )


@app.post("/jobs/<name>/trigger")
def job_trigger(name: str):
    _form_checked()
    job = jobs.load(settings(), name)
    forms = request.forms
    params = {p: forms.getunicode(f"param.{p}") for p in job.params if f"param.{p}" in forms}
    values = {
        "branch": forms.getunicode("branch", default=""),
        "commit": forms.getunicode("commit", default=""),
        "params": {**job.params, **params},
    }
    try:
        build = builds.trigger(
            job.name,
            branch=values["branch"].strip(),
            commit=values["commit"].strip(),
            params=params,
            trigger="web",
        )
    except UserError as exc:
        if exc.status == 404:
            raise
        response.status = exc.status
        return job_page(name, error=str(exc), values=values)
    bottle.redirect(f"/builds/{build.id}", 303)


@app.get("/builds/<build_id>")
def build_page(build_id: str):
    _html_read()
    build = builds.get(build_id)
    stages = list(Stage.select().where(Stage.build == build.id).order_by(Stage.position))
    return page(
        "build.tpl",
        title=f"{build.job} #{build.number}",
        build=build,
        stages=stages,
        position=builds.position(build),
        final=build.is_final,
        tail=LOG_TAIL,
    )


@app.post("/builds/<build_id>/cancel")
def build_cancel(build_id: str):
    _form_checked()
    build = builds.cancel(build_id)
    bottle.redirect(f"/builds/{build.id}", 303)


@app.post("/builds/<build_id>/retry")
def build_retry(build_id: str):
    _form_checked()
    build = builds.retry(build_id)
    bottle.redirect(f"/builds/{build.id}", 303)


def _local_path(target: str) -> str:
    """Only paths on this server after a login: never //evil.example or https://..."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@app.get("/login")
def login_form():
    return page(
        "login.tpl",
        title="Log in",
        next=_local_path(request.query.getunicode("next", default="/")),
    )


@app.post("/login")
def login():
    target = _local_path(request.forms.getunicode("next", default="/"))
    given = request.forms.getunicode("csrf", default="")
    if not given or not _same(given, request.get_cookie(CSRF_COOKIE) or ""):
        raise UserError("the form expired: reload the page and try again", 403)
    token = settings().token
    if not token:
        bottle.redirect(target, 303)
    if not _same(request.forms.getunicode("token", default="").strip(), token):
        response.status = 401
        return page("login.tpl", title="Log in", next=target, error="That is not the token.")
    nonce = secrets.token_urlsafe(18)
    response.set_cookie(
        SESSION_COOKIE,
        f"{nonce}.{_sign(token, 'session', nonce)}",
        path="/",
        httponly=True,
        samesite="lax",
        max_age=30 * 86400,
        secure=request.urlparts.scheme == "https",
    )
    bottle.redirect(target, 303)


@app.post("/logout")
def logout():
    given = request.forms.getunicode("csrf", default="")
    if not given or not _same(given, request.get_cookie(CSRF_COOKIE) or ""):
        raise UserError("the form expired: reload the page and try again", 403)
    response.delete_cookie(SESSION_COOKIE, path="/")
    bottle.redirect("/", 303)


# -- serving -----------------------------------------------------------------------


def serve(host: str, port: int) -> None:
    """Serve the app with waitress; [server] threads bounds the live logs at once."""
    import waitress

    cfg = settings()
    models.bind(cfg)
    cap = cfg["server"]["max_body"]
    # The app answers 413 with a JSON reason; waitress is the backstop for liars
    # about Content-Length and for chunked bodies.
    bottle.BaseRequest.MEMFILE_MAX = cap + 1
    waitress.serve(
        app,
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


# Docker deploys add /apps/<job>/..., /api/deployments and rollback here.
try:
    from lightci import proxy
except ImportError:
    proxy = None
if proxy is not None and hasattr(proxy, "install"):
    proxy.install(app)
