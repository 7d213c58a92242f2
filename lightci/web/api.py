"""The JSON API (SPEC section 7), /health and /metrics."""

from __future__ import annotations

import os
from collections.abc import Iterator

import bottle
from bottle import response

from lightci import (
    builds,
    deploy,
    gitops,
    jobs,
    metrics,
    overview,
    queues,
    retention,
    workspace,
)
from lightci.config import settings
from lightci.errors import UserError
from lightci.logs import hide_credentials
from lightci.models import STATES, Build, as_dict, db
from lightci.web.answers import body_json, int_arg, json_answer, limit_arg, log_start, text_arg
from lightci.web.auth import public_text, require_read, require_write


def health():
    try:
        db.execute_sql("SELECT 1 FROM build LIMIT 1").fetchall()  # the table, not only a socket
    except Exception as exc:  # any driver's error: the answer is 503 with its words
        return json_answer(503, {"status": "unavailable", "error": f"database: {exc}"})
    try:
        queues.pending()
    except Exception as exc:  # the queue's backend, whichever it is
        return json_answer(503, {"status": "unavailable", "error": f"queue: {exc}"})
    full = workspace.disk_full(settings())
    if full:  # builds can neither log nor end, and triggers answer 507
        return json_answer(503, {"status": "unavailable", "error": full})
    return {"status": "ok"}


def prometheus():
    require_read()
    response.content_type = "text/plain; version=0.0.4; charset=utf-8"
    return metrics.text()


def job_dict(job: jobs.Job, last: Build | None = None, outlook: dict | None = None) -> dict:
    """A job as the API shows it: its settings, never its secrets' values."""
    return {
        "name": job.name,
        "description": job.description,
        "repo": hide_credentials(job.repo),
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
        "priority": job.priority,
        "memory": job.memory,
        "secrets": job.secrets,
        "env": sorted(job.env),
        "docker": job.docker,
        "deploy": {k: v for k, v in job.deploy.items() if k != "env"},
        "config": job.config,
        "pull_requests": job.pull_requests,
        "schedules": job.schedules,
        "after": job.after,
        "artifacts": job.artifacts,
        # where statuses go, the token by its secret's name; a notification's webhook URL
        # often is its secret (a chat's hook), so only what each one reports
        "forge": job.forge,
        "notify": [{"on": n["on"], "email": len(n.get("email", []))} for n in job.notify],
        "webhook": f"/hooks/{job.name}",
        "webhook_secret_set": bool(job.webhook_secret or settings()["webhooks"]["secret"]),
        "last_build": {**as_dict(last), **(outlook or {}).get(last.id, {})} if last else None,
    }


def api_jobs():
    require_read()
    good, broken = jobs.load_all(settings())
    last = {j.name: overview.last_build(j.name) for j in good}
    outlook = overview.outlooks([b for b in last.values() if b])  # one forecast for all
    return {
        "jobs": [job_dict(j, last[j.name], outlook) for j in good],
        "broken": [{"name": n, "error": public_text(e)} for n, e in broken.items()],
    }


def api_job(name: str):
    require_read()
    job = jobs.load(settings(), name)
    last = overview.last_build(job.name)
    return job_dict(job, last, overview.outlooks([last] if last else []))


def api_trigger(name: str):
    require_write()
    data = body_json(allowed=("branch", "commit", "params", "priority"))
    build = builds.trigger(
        name,
        branch=data.get("branch"),
        commit=data.get("commit"),
        params=data.get("params"),
        trigger="api",
        priority=data.get("priority"),
    )
    return json_answer(201, overview.detail(build))  # a queued build's waiting_for and ETAs too


def api_builds():
    require_read()
    status = text_arg("status")
    if status and status not in STATES:
        raise UserError(f"unknown status {status[:40]!r} (one of {', '.join(STATES)})")
    limit = limit_arg()
    rows = overview.listing(
        job=text_arg("job"),
        status=status,
        key=text_arg("key"),
        limit=limit,
        before=int_arg("before", None, least=1),  # ids below it: 0 would be none at all
    )
    open_ones = overview.outlooks(rows)  # a queued build's waiting_for and ETAs
    return {
        "builds": [{**as_dict(b), **open_ones.get(b.id, {})} for b in rows],
        "next_before": rows[-1].id if len(rows) == limit else None,
    }


def api_build(build_id: str):
    require_read()
    return overview.detail(builds.get(build_id))


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
    start = log_start(size)
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


def api_cancel(build_id: str):
    require_write()
    return as_dict(builds.cancel(build_id))


def api_retry(build_id: str):
    require_write()
    return json_answer(201, overview.detail(builds.retry(build_id)))  # queued: its outlook too


def api_status():
    require_read()
    return overview.status()


def api_cleanup():
    require_write()
    data = body_json(allowed=("days", "dry_run"))
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise UserError('"dry_run" must be true or false')
    return retention.cleanup(days=data.get("days"), dry_run=dry_run)


def api_rollback(job: str):
    """202 with the new deployment; the scheduler health-checks it like any deploy."""
    require_write()
    if gitops.has_gitops(job):  # a rollback build reverts the last bump, or re-applies "to"
        to = body_json(allowed=("to",)).get("to")
        return json_answer(202, as_dict(gitops.request_rollback(job, to, "api")))
    deployment = deploy.rollback(job, trigger="api")
    return json_answer(202, deploy.as_dict(deployment))


def install(app: bottle.Bottle) -> None:
    for path, method, handler in (
        ("/health", "GET", health),
        ("/metrics", "GET", prometheus),
        ("/api/jobs", "GET", api_jobs),
        ("/api/jobs/<name>", "GET", api_job),
        ("/api/jobs/<name>/builds", "POST", api_trigger),
        ("/api/builds", "GET", api_builds),
        ("/api/builds/<build_id>", "GET", api_build),
        ("/api/builds/<build_id>/log", "GET", api_log),
        ("/api/builds/<build_id>/cancel", "POST", api_cancel),
        ("/api/builds/<build_id>/retry", "POST", api_retry),
        ("/api/status", "GET", api_status),
        ("/api/cleanup", "POST", api_cleanup),
        ("/api/jobs/<job>/rollback", "POST", api_rollback),
    ):
        app.route(path, method, handler)
