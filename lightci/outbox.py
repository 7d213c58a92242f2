"""The outbox: what a build's state change owes the forge and the people who asked.

``record`` runs inside the transaction that writes the state (the trigger, the
claim, the release, the sweeper's lost and expired, a cancel), so a state that
is committed always has its deliveries committed with it, and a state that is
rolled back has none. Nothing is sent here: lightci.sender sends the rows later,
outside every request and claim, and retries them.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from lightci import jobs
from lightci.config import settings
from lightci.errors import UserError
from lightci.models import CANCELLED, FINAL, QUEUED, RUNNING, SUCCESS, Build, Delivery, as_dict

# Set when this process committed outbox rows (a worker's drain in `serve`): the
# sender of a scheduler here (lightci.sender) sends them at once.
recorded = threading.Event()

log = logging.getLogger(__name__)

FAILURES = tuple(s for s in FINAL if s not in (SUCCESS, CANCELLED))


def _webhooks_forge(job_name: str) -> str:
    """A manual, API or scheduled build of a job without [forge] kind: the forge its
    webhooks come from (a GitLab project's statuses to GitLab's API); GitHub if none did."""
    last = (
        Build.select(Build.forge)
        .where(Build.job == job_name, Build.forge != "")
        .order_by(Build.id.desc())
        .first()
    )
    return last.forge if last else "github"


def record(build: Build, state: str) -> int:
    """Queue the deliveries the job asks for when `build` enters `state`; returns how many."""
    try:
        job = jobs.load(settings(), build.job)
    except UserError:  # a job deleted or broken since: nobody to tell
        return 0
    rows = []
    if job.forge:
        forge = job.forge
        kind = forge["kind"] or build.forge or _webhooks_forge(job.name)
        context = forge["context"].replace("{job}", job.name)
        body = {**forge, "kind": kind, "context": context}
        rows.append(("status", f"{kind} {forge['repo']} {context}", body))
    for i, entry in enumerate(job.notify, 1):
        if not _wanted(entry["on"], build, state):
            continue
        if entry["webhook"]:  # the build as it is now: sent later, it may have moved on
            snapshot = {"url": entry["webhook"], "build": as_dict(build)}
            rows.append(("webhook", f"notify #{i} webhook", snapshot))
        if entry["email"]:
            rows.append(("email", f"notify #{i} email", {"to": entry["email"]}))
    now = time.time()
    for kind, target, body in rows:
        Delivery.insert(
            build=build.id,
            kind=kind,
            target=target[:255],
            event=state,
            next_at=now,
            created_at=now,
            body=json.dumps(body),
        ).on_conflict_ignore().execute()
    return len(rows)


def record_ids(ids: list[int], state: str) -> None:
    """record() for builds known by id (those a supersede ended at once)."""
    for build in list(Build.select().where(Build.id.in_(ids))):
        record(build, state)


def _wanted(on: list[str], build: Build, state: str) -> bool:
    if "started" in on and state == RUNNING:
        return True
    if state == QUEUED or state not in FINAL:
        return False
    if "always" in on:
        return True
    if state == SUCCESS:
        return "success" in on or ("fixed" in on and _broken_before(build))
    if state == CANCELLED:
        return "cancelled" in on
    return "failure" in on


def _broken_before(build: Build) -> bool:
    """The key's last ended build before this one (cancelled ones aside) did not pass."""
    before = (
        Build.select(Build.status)
        .where(
            Build.key == build.key,
            Build.id < build.id,
            Build.status.in_(FAILURES + (SUCCESS,)),
        )
        .order_by(Build.id.desc())
        .first()
    )
    return before is not None and before.status != SUCCESS
