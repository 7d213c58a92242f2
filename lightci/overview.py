"""What the CLI, the API and the pages look at: the queue with why and when, history.

Read only: every write to builds is lightci.builds'.
"""

from __future__ import annotations

import time
from typing import Any

from lightci import admission, eta, wakeups
from lightci.config import settings
from lightci.models import ACTIVE, FINAL, QUEUED, Build, Stage, as_dict, iso, run_sql

NO_WORKER = "no worker is running: start `lightci worker` or `lightci serve`"
EXPIRING = "waited over queue_timeout ({} s): it ends expired at the next sweep"
_QUEUE_LENGTH = f"SELECT COUNT(*) FROM build WHERE status = '{QUEUED}'"


def position(build: Build) -> int:
    """1-based place in the queue in the claim's order (claim_order), 0 when not queued."""
    if build.status != QUEUED:
        return 0
    waiting = [b.id for b in claim_order(list(Build.select().where(Build.status == QUEUED)))]
    # `build` may be a moment old: a worker may have claimed it since (then 0, not queued)
    return waiting.index(build.id) + 1 if build.id in waiting else 0


def claim_order(queued: list[Build], now: float | None = None) -> list[Build]:
    """Queued builds in the order lightci.claims takes them while slots and memory
    allow: a key's builds oldest first; among the keys' oldest, the one that has waited
    past starve_after first, else the higher priority, then the older. Builds past their
    queue_timeout come last: no claim takes them, they end expired."""
    now = time.time() if now is None else now
    starved = now - admission.starve_after(settings())
    keys: dict[str, list[Build]] = {}
    expiring = []
    for build in sorted(queued, key=lambda b: b.id):
        if now - build.queued_at > build.queue_timeout:
            expiring.append(build)
        else:
            keys.setdefault(build.key, []).append(build)
    order = []
    while keys:
        heads = [builds[0] for builds in keys.values()]
        oldest = min(heads, key=lambda b: (b.queued_at, b.id))
        if oldest.queued_at >= starved:
            oldest = min(heads, key=lambda b: (-b.priority, b.id))
        order.append(oldest)
        keys[oldest.key].pop(0)
        if not keys[oldest.key]:
            del keys[oldest.key]
    return order + expiring


def detail(build: Build) -> dict[str, Any]:
    """One build as GET /api/builds/<id> and `lightci show --json` give it."""
    return {
        **as_dict(build),
        "stages": stages(build),
        "position": position(build),
        **outlook(build),
    }


def stages(build: Build) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {
            "name": s.name,
            "started_at": iso(s.started_at),
            "finished_at": iso(s.finished_at),
            "duration": round((s.finished_at or now) - s.started_at, 3),
            "exit_code": s.exit_code,
        }
        for s in Stage.select().where(Stage.build == build.id).order_by(Stage.position)
    ]


def status(queued_limit: int | None = None) -> dict[str, Any]:
    """Slots in use, running builds with their worker and heartbeat, the queue.

    queued_limit: list only the first N queued builds (the dashboard), and
    count the rest; `queued_total` is always the whole queue's length.
    """
    cfg = settings()
    now = time.time()
    running = list(Build.select().where(Build.status.in_(ACTIVE)).order_by(Build.id))
    waiting = claim_order(list(Build.select().where(Build.status == QUEUED)))
    queued, total = waiting[:queued_limit] if queued_limit else waiting, len(waiting)
    outlook = eta.forecast(cfg, running, queued, now)  # why each waits, and when
    never = NO_WORKER if queued and wakeups.no_worker(cfg) else ""
    for b in queued:  # what no claim will start has no time to start by
        late = now - b.queued_at > b.queue_timeout
        why = EXPIRING.format(b.queue_timeout) if late else never
        if why:
            outlook[b.id].update(waiting_for=why, eta_start=None, eta_finish=None)
    return {
        "slots": cfg.slots,
        "slots_used": len(running),
        "queued_total": total,
        "running": [
            {
                **as_dict(b),
                "heartbeat_age": round(now - b.heartbeat_at, 1) if b.heartbeat_at else None,
                **outlook[b.id],
            }
            for b in running
        ],
        "queued": [
            {**as_dict(b), "position": i, "waited": round(now - b.queued_at, 1), **outlook[b.id]}
            for i, b in enumerate(queued, 1)
        ],
    }


def outlook(build: Build) -> dict[str, Any]:
    """One open build's waiting_for / eta_start / eta_finish, as in status(); {} once final."""
    return outlooks([build]).get(build.id, {})


def outlooks(rows: list[Build]) -> dict[int, dict[str, Any]]:
    """Build id -> the outlook of each open build among rows, from one forecast."""
    if all(b.is_final for b in rows):
        return {}
    state = status()
    return {
        b["id"]: {k: b[k] for k in eta.FIELDS if k in b} for b in state["running"] + state["queued"]
    }


def listing(
    job: str | None = None,
    status: str | None = None,
    key: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> list[Build]:
    """Newest first, for the API and the job page."""
    query = Build.select().order_by(Build.id.desc()).limit(max(1, min(limit, 500)))
    if job:
        query = query.where(Build.job == job)
    if status:
        query = query.where(Build.status == status)
    if key:
        query = query.where(Build.key == key)
    if before:
        query = query.where(Build.id < before)
    return list(query)


def queue_length() -> int:
    """Builds waiting for a slot: webhooks answer 429 past [server] max_queued.

    Plain SQL on the (status, id) index: every webhook asks, and peewee's query
    building costs more than the count itself.
    """
    return run_sql(_QUEUE_LENGTH).fetchone()[0]


def count(job_name: str) -> int:
    return Build.select().where(Build.job == job_name).count()


def last_final(job_name: str, branch: str | None = None) -> Build | None:
    """The job's (or one branch's) newest ended build: its badge. Pull requests do not
    count: a project's badge is not an outsider's last proposal, and a pull request from a
    fork's branch named like a branch is not that branch."""
    query = Build.select().where(Build.job == job_name, Build.status.in_(FINAL))
    query = query.where(Build.pr.is_null())
    if branch is not None:
        query = query.where(Build.branch == branch)
    return query.order_by(Build.id.desc()).first()


def last_build(job_name: str) -> Build | None:
    """The job's newest build (the dashboard, `lightci jobs`, the API)."""
    return Build.select().where(Build.job == job_name).order_by(Build.id.desc()).first()
