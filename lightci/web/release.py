"""Release pipelines on the web: GitOps bumps, the deployments page, delivery numbers."""

from __future__ import annotations

import bottle
from bottle import request

from lightci import builds, delivery, deploy, gitops, images, jobs
from lightci.config import settings
from lightci.errors import UserError
from lightci.web import auth
from lightci.web.answers import limit_arg, text_arg
from lightci.web.auth import require_read
from lightci.web.render import page


def _job_arg(known: bool = False) -> str | None:
    """?job=: a job's name; `known`: one of the jobs there are (404 for any other)."""
    job = text_arg("job")
    if job:
        jobs.check_name(job)
        if known and job not in jobs.names(settings()):
            raise UserError(f"no job {job!r}", 404)
    return job


def api_bumps():
    require_read()
    rows = gitops.history(_job_arg(known=True), limit_arg(100))
    return {"bumps": [gitops.as_dict(r) for r in rows]}


def api_images(build_id: str):
    """A build's component images with their tags and digests."""
    require_read()
    build = builds.get(build_id)
    return {"images": [images.as_dict(i) for i in images.for_build(build.id)]}


def api_metrics():
    """?window=30d (or 12h) &job=: one job's numbers, or the overall ones with every job's."""
    require_read()
    job, window = _job_arg(known=True), text_arg("window")
    if job:
        return delivery.numbers(job, window)
    return {
        "overall": delivery.numbers(None, window),
        "jobs": delivery.per_job(window),
        "targets": delivery.targets(),
    }


def api_delivery():
    """SPEC's form: ?job=&days=30."""
    require_read()
    return delivery.numbers(_job_arg(known=True), text_arg("days"))


def api_deployments():
    require_read()
    rows = deploy.listing(_job_arg(known=True), limit_arg())
    return {"deployments": [deploy.as_dict(d) for d in rows]}


def deployments_page():
    auth.html_read()
    job = _job_arg()
    return page(
        "deliveries.tpl",
        title="Deployments",
        job_name=job,
        bumps=gitops.history(job, 500),
        deployments=deploy.listing(job, 100),
    )


def metrics_page():
    auth.html_read()
    window = request.query.getunicode("window") or None
    return page(
        "metrics.tpl",
        title="Metrics",
        window=request.query.getunicode("window") or "",
        overall=delivery.numbers(None, window),
        per_job=delivery.per_job(window),
        targets=delivery.targets(),
    )


def install(app: bottle.Bottle) -> None:
    for path, method, handler in (
        ("/api/bumps", "GET", api_bumps),
        ("/api/deployments", "GET", api_deployments),
        ("/api/builds/<build_id>/images", "GET", api_images),
        ("/api/metrics", "GET", api_metrics),
        ("/api/metrics/delivery", "GET", api_delivery),
        ("/deployments", "GET", deployments_page),
        ("/metrics-page", "GET", metrics_page),
    ):
        app.route(path, method, handler)
