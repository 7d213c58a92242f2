"""The HTML pages: dashboard, job, build, login; and the forms they post."""

from __future__ import annotations

import time
from typing import Any

import bottle
from bottle import request, response

from lightci import artifacts, builds, delivery, deploy, images, jobs, overview, sandbox
from lightci.config import settings
from lightci.errors import UserError
from lightci.models import Build, Stage, deliveries
from lightci.web import auth
from lightci.web.answers import form_text, int_arg
from lightci.web.render import page, views

LOG_TAIL = 1024 * 1024  # bytes of log the build page loads before following
DASHBOARD_QUEUED = 50  # queued builds the dashboard lists; it counts the rest
HISTORY = 50  # builds on a job page


def static(filename: str):
    answer = bottle.static_file(filename, root=str(views() / "static"))
    answer.set_header("Cache-Control", "public, max-age=3600")
    return answer


def dashboard():
    auth.html_read()
    cfg = settings()
    good, broken = jobs.load_all(cfg)
    return page(
        "dashboard.tpl",
        title="Dashboard",
        rows=[(job, overview.last_build(job.name)) for job in good],
        broken={name: auth.public_text(error) for name, error in broken.items()},
        state=overview.status(queued_limit=DASHBOARD_QUEUED),
        unhealthy=deploy.unhealthy(),
        not_isolated=sandbox.warning(cfg),
        now=time.time(),
        below_target=delivery.below_target(),
    )


def _trend(history: list[Build]) -> list[dict[str, Any]]:
    """Bars for the duration chart: oldest left, newest right."""
    done = [b for b in reversed(history) if b.started_at and b.finished_at]
    longest = max((b.duration or 0 for b in done), default=0) or 1
    return [{"build": b, "height": max(2.0, 100.0 * (b.duration or 0) / longest)} for b in done]


def job_page(name: str, error: str = "", values: dict | None = None):
    auth.html_read()
    cfg = settings()
    job = jobs.load(cfg, name)
    before = int_arg("before", None)
    # One more than shown: "Older builds" only when there are some (50 builds had an
    # "Older builds" link to an empty page).
    history = overview.listing(job=job.name, limit=HISTORY + 1, before=before)
    older, history = len(history) > HISTORY, history[:HISTORY]
    trend_rows = history if before is None else overview.listing(job=job.name, limit=HISTORY)
    return page(
        "job.tpl",
        title=job.name,
        job=job,
        history=history,
        trend=_trend(trend_rows),
        total=overview.count(job.name),
        next_before=history[-1].id if older else None,
        older_page=before is not None,
        error=error,
        values=values or {"branch": "", "commit": "", "params": dict(job.params)},
        webhook_secret_set=bool(job.webhook_secret or cfg["webhooks"]["secret"]),
        public_url=request.urlparts.scheme + "://" + request.urlparts.netloc,
        deployments=deploy.listing(job.name, 10),
    )


def job_trigger(name: str):
    auth.form_checked()
    job = jobs.load(settings(), name)
    forms = request.forms
    params = {p: form_text(f"param.{p}") for p in job.params if f"param.{p}" in forms}
    values = {
        "branch": form_text("branch"),
        "commit": form_text("commit"),
        "params": {**job.params, **params},
        "priority": form_text("priority"),
    }
    try:
        build = builds.trigger(
            job.name,
            branch=values["branch"].strip(),
            commit=values["commit"].strip(),
            params=params,
            trigger="web",
            priority=values["priority"].strip() or None,
        )
    except UserError as exc:
        if exc.status == 404:
            raise
        response.status = exc.status
        return job_page(name, error=str(exc), values=values)
    bottle.redirect(f"/builds/{build.id}", 303)


def build_page(build_id: str):
    auth.html_read()
    build = builds.get(build_id)
    return page(
        "build.tpl",
        title=f"{build.job} #{build.number}",
        build=build,
        stages=list(Stage.select().where(Stage.build == build.id).order_by(Stage.position)),
        position=overview.position(build),
        outlook=overview.outlook(build),
        final=build.is_final,
        tail=LOG_TAIL,
        images=images.for_build(build.id),
        deliveries=deliveries(build),
        artifacts=artifacts.listing(settings(), build),
    )


def build_cancel(build_id: str):
    auth.form_checked()
    build = builds.cancel(build_id)
    bottle.redirect(f"/builds/{build.id}", 303)


def build_retry(build_id: str):
    auth.form_checked()
    build = builds.retry(build_id)
    bottle.redirect(f"/builds/{build.id}", 303)


def login_form():
    target = auth.local_path(request.query.getunicode("next", default="/"))
    return page("login.tpl", title="Log in", next=target)


def login():
    target = auth.local_path(request.forms.getunicode("next", default="/"))
    if not auth.csrf_field_ok():
        raise UserError("the form expired: reload the page and try again", 403)
    if not settings().token:
        bottle.redirect(target, 303)
    if not auth.check_login(request.forms.getunicode("token", default="").strip()):
        response.status = 401
        return page("login.tpl", title="Log in", next=target, error="That is not the token.")
    auth.start_session()
    bottle.redirect(target, 303)


def logout():
    if not auth.csrf_field_ok():
        raise UserError("the form expired: reload the page and try again", 403)
    auth.end_session()
    bottle.redirect("/", 303)


def install(app: bottle.Bottle) -> None:
    for path, method, handler in (
        ("/static/<filename:path>", "GET", static),
        ("/", "GET", dashboard),
        ("/jobs/<name>", "GET", job_page),
        ("/jobs/<name>/trigger", "POST", job_trigger),
        ("/builds/<build_id>", "GET", build_page),
        ("/builds/<build_id>/cancel", "POST", build_cancel),
        ("/builds/<build_id>/retry", "POST", build_retry),
        ("/login", "GET", login_form),
        ("/login", "POST", login),
        ("/logout", "POST", logout),
    ):
        app.route(path, method, handler)
