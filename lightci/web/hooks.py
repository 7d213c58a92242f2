"""POST /hooks/<job>: a forge's push, checked, committed, answered fast (no git, no disk)."""

from __future__ import annotations

import bottle
from bottle import request

from lightci import builds, jobs, webhooks
from lightci.config import settings
from lightci.web.answers import json_answer, raw_body


def hook(name: str):
    cfg = settings()
    job = jobs.load(cfg, name)
    body = raw_body(cfg["server"]["max_body"])
    verdict = webhooks.judge(
        job, request.headers, body, request.content_type, cfg["webhooks"]["secret"]
    )
    if verdict.push is None:
        return {"skipped": verdict.skipped}
    push = verdict.push
    delivery = f"{push.forge}:{job.name}:{push.delivery}" if push.delivery else None
    build, redelivered = builds.from_push(
        job.name,
        branch=push.tag if push.tag is not None else push.branch,
        commit=push.commit,
        params=push.params,
        source=verdict.trigger,
        delivery=delivery,
        cfg=cfg,
    )
    if redelivered:
        return {"skipped": f"redelivery of {push.delivery}", "builds": [build.id]}
    return json_answer(202, {"builds": [build.id]})


def install(app: bottle.Bottle) -> None:
    app.route("/hooks/<name>", "POST", hook)
