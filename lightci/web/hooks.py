"""POST /hooks/<job>: a forge's push, checked, committed, answered fast (no git, no disk)."""

from __future__ import annotations

import bottle
from bottle import request

from lightci import builds, jobs, webhooks
from lightci.config import settings
from lightci.errors import UserError
from lightci.web import auth
from lightci.web.answers import json_answer, raw_body


class _Headers:
    """The request's headers as the forges' classes read them; bytes that are
    not UTF-8 in a header lightci reads are a 400 that names it, not a 500."""

    def get(self, name: str, default: str | None = None) -> str | None:
        value = auth.header(name)
        if value is None:
            raise UserError(f"the {name} header is not UTF-8 text")
        return value or default


def hook(name: str):
    cfg = settings()
    try:
        job = jobs.load(cfg, name)
    except UserError as exc:
        if exc.status == 404:
            raise
        # Anyone may call this URL, signed or not: what is wrong with job.toml is its owner's
        # to read (`lightci jobs`, the dashboard), not every caller's.
        raise UserError(
            f"job {name!r} has a broken job.toml: see `lightci jobs`", exc.status
        ) from None
    body = raw_body(cfg["server"]["max_body"])
    verdict = webhooks.judge(job, _Headers(), body, request.content_type, cfg["webhooks"]["secret"])
    if verdict.push is None:
        return {"skipped": verdict.skipped}
    push = verdict.push
    delivery = f"{push.forge}:{job.name}:{push.delivery}" if push.delivery else None
    build, skipped = builds.from_push(
        job.name,
        branch=push.branch if push.tag is None else "",
        commit=push.commit,
        params=push.params,
        source=verdict.trigger,
        delivery=delivery,
        cfg=cfg,
        origin=_origin(push),
    )
    if skipped:
        return {"skipped": skipped, "builds": [build.id]}
    return json_answer(202, {"builds": [build.id]})


def _origin(push: webhooks.Push) -> dict:
    """The build's fields that say where a webhook's build came from."""
    fields = {"forge": push.forge, "tag": push.tag or ""}
    if push.pr is not None:
        fields.update(pr=push.pr.number, pr_base=push.pr.base, pr_ref=push.pr.ref)
        fields["fork"] = push.pr.fork
    return fields


def install(app: bottle.Bottle) -> None:
    app.route("/hooks/<name>", "POST", hook)
