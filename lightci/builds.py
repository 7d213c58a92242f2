"""What a person or a forge can do to builds: trigger, cancel, retry, look.

The CLI, the JSON API, the HTML form and the webhooks all call these, so they
can never disagree. Each write commits before the queue is woken.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from lightci import admission, jobs, outbox, overview, wakeups, workspace
from lightci.config import Settings, settings
from lightci.database import column_list
from lightci.errors import UserError
from lightci.models import ACTIVE, CANCELLED, QUEUED, Build, run_sql, write_lock

log = logging.getLogger(__name__)

MAX_FIELD = 255
_ID = re.compile(r"[0-9]{1,19}")
DISK_FULL = 507  # HTTP's Insufficient Storage


def _check_text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{name} must be a string")
    if len(value) > MAX_FIELD or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise UserError(f"{name} must be at most {MAX_FIELD} printable characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):  # JSON's lone "\ud800"
        raise UserError(f"{name} must be valid Unicode text")
    return value


_SEEN = "SELECT id FROM build WHERE delivery = ?"
_LAST_NUMBER = "SELECT MAX(number) FROM build WHERE job = ?"
# The (job, commit) index finds it: one push is one ref's commit with the job's params.
_SAME_PUSH = (
    'SELECT id FROM build WHERE job = ? AND "commit" = ? AND branch = ? AND params = ? '
    "AND queued_at > ? AND COALESCE(pr, 0) = ? AND tag = ? ORDER BY id DESC LIMIT 1"
)
REPLAY_WINDOW = 86400  # seconds: a push of a commit queued this recently queues nothing new
_NEW_FIELDS = [f for f in Build._meta.sorted_fields if f.name != "id"]
_INSERT = (
    f"INSERT INTO build ({column_list(_NEW_FIELDS)}) "
    f"VALUES ({', '.join('?' * len(_NEW_FIELDS))}) RETURNING id"
)


def delivered(delivery: str) -> int | None:
    """The build a webhook delivery id already queued, if any (redeliveries queue nothing).

    Plain SQL on the unique index: every push asks, and peewee's query
    building costs more than the lookup.
    """
    seen = run_sql(_SEEN, delivery).fetchone()
    return seen[0] if seen is not None else None


def check_room(cfg: Settings) -> None:
    """Webhooks answer 429 past [server] max_queued builds waiting."""
    cap = cfg["server"]["max_queued"]
    if cap and overview.queue_length() >= cap:
        raise UserError(
            f"{cap} builds are queued already ([server] max_queued)", 429, retry_after=30
        )


def from_push(
    job_name: str,
    branch: str | None,
    commit: str,
    params: dict[str, Any],
    source: str,
    delivery: str | None,
    cfg: Settings,
    origin: dict[str, Any] | None = None,
) -> tuple[Build, str]:
    """A webhook's build: (the new build, ""), or (an earlier build, why none was queued).

    None is queued for a redelivery (a delivery id seen before) nor for a
    replay: the same commit of the same ref, with the same params, queued in the
    last REPLAY_WINDOW seconds. A captured signed push sent again with a new
    delivery id, or none, is such a replay; `retry` is how a person rebuilds.
    """
    if delivery:
        seen = delivered(delivery)
        if seen is not None:
            return Build.get_by_id(seen), "a redelivery: its delivery id was seen before"
    check_room(cfg)
    # Two copies of one push at once: the write lock lets one row in.
    return _queue(
        job_name, branch, commit, params, source, delivery, None, cfg, replays=True, origin=origin
    )


def trigger(
    job_name: str,
    branch: str | None = "",
    commit: str | None = "",
    params: dict[str, Any] | None = None,
    trigger: str = "cli",
    delivery: str | None = None,
    retry_of: int | None = None,
    cfg: Settings | None = None,
    origin: dict[str, Any] | None = None,
    priority: int | str | None = None,
) -> Build:
    """Queue one build; returns the committed row (the same row again for a redelivery).

    origin: where a webhook's build came from (pr, pr_base, pr_ref, fork, tag, forge).
    priority: None takes the job's; higher is claimed first across keys."""
    build, _ = _queue(
        job_name,
        branch,
        commit,
        params,
        trigger,
        delivery,
        retry_of,
        cfg,
        origin=origin,
        priority=priority,
    )
    return build


def _queue(
    job_name: str,
    branch: str | None,
    commit: str | None,
    params: dict[str, Any] | None,
    source: str,
    delivery: str | None,
    retry_of: int | None,
    cfg: Settings | None,
    replays: bool = False,
    origin: dict[str, Any] | None = None,
    priority: int | str | None = None,
) -> tuple[Build, str]:
    """Insert the row, then wake a worker. A full disk answers 507: a build queued now
    could neither log nor end."""
    cfg = cfg or settings()
    full = workspace.disk_full(cfg)
    if full:
        raise UserError(f"{full}: no build can be queued until there is room", DISK_FULL)
    try:
        build, why_not = _insert(
            cfg,
            job_name,
            branch,
            commit,
            params,
            source,
            delivery,
            retry_of,
            replays,
            origin,
            priority,
        )
    except UserError:
        raise
    except Exception as exc:  # the database's own error for a full disk, whichever driver
        if workspace.disk_full_error(exc):
            raise UserError(f"disk full: no build can be queued ({exc})", DISK_FULL) from None
        raise
    if why_not:
        return build, why_not
    try:
        wakeups.wake()
    except OSError as exc:  # the row is queued: the sweeper wakes a worker once there is room
        if not workspace.disk_full_error(exc):
            raise
        log.warning("build %s queued, but no worker could be woken: %s", build.id, exc)
    return build, ""


def _insert(
    cfg: Settings,
    job_name: str,
    branch: str | None,
    commit: str | None,
    params: dict[str, Any] | None,
    source: str,
    delivery: str | None,
    retry_of: int | None,
    replays: bool,
    origin: dict[str, Any] | None = None,
    priority: int | str | None = None,
) -> tuple[Build, str]:
    origin = origin or {}
    job = jobs.load(cfg, job_name)
    priority = admission.priority(job, priority)
    branch = jobs.check_branch(_check_text("branch", branch))
    commit = jobs.check_commit(_check_text("commit", commit))
    resolved = job.resolve_params(params)
    params_json = json.dumps(resolved, sort_keys=True)
    key = job.render_key(branch, commit, resolved, origin.get("pr"), origin.get("tag", ""))
    now = time.time()
    with write_lock():
        if delivery:
            seen = delivered(delivery)
            if seen is not None:
                return Build.get_by_id(seen), "a redelivery: its delivery id was seen before"
        if replays and commit:
            seen = run_sql(
                _SAME_PUSH,
                job.name,
                commit,
                branch,
                params_json,
                now - REPLAY_WINDOW,
                origin.get("pr") or 0,
                origin.get("tag", ""),
            ).fetchone()
            if seen is not None:
                earlier = Build.get_by_id(seen[0])
                ref = branch or f"tag {origin.get('tag', '')}"
                return earlier, (
                    f"commit {commit[:12]} of {ref} was queued already as build "
                    f"{earlier.label()} (id {earlier.id}): retry that build to run it again"
                )
        number = (run_sql(_LAST_NUMBER, job.name).fetchone()[0] or 0) + 1
        build = _create(
            job=job.name,
            number=number,
            key=key,
            branch=branch,
            commit=commit,
            params=params_json,
            trigger=source,
            queued_at=now,
            timeout=job.timeout or cfg["builds"]["timeout"],
            queue_timeout=job.queue_timeout or cfg["builds"]["queue_timeout"],
            delivery=delivery,
            retry_of=retry_of,
            **origin,
            priority=priority,
            memory_expected=admission.job_memory(job),
        )
        if job.supersede != "none":
            _supersede(build, running=job.supersede == "running")
        outbox.record(build, QUEUED)
    return build, ""


def _create(**values: Any) -> Build:
    """Build.create, without peewee composing the INSERT anew: 0.25 ms a trigger when
    warm, milliseconds on the wake-up path of a server that was at rest."""
    build = Build(**values)  # the model's defaults for the rest
    data = build.__data__
    build.id = run_sql(_INSERT, *[f.db_value(data.get(f.name)) for f in _NEW_FIELDS]).fetchone()[0]
    return build


def _supersede(build: Build, running: bool) -> None:
    """A newer build of the key ends older queued ones (and asks running ones to stop)."""
    reason = f"superseded by #{build.number}"
    older = (Build.key == build.key) & (Build.status == QUEUED) & (Build.id < build.id)
    ended = [b.id for b in Build.select(Build.id).where(older)]
    Build.update(status=CANCELLED, finished_at=time.time(), error=reason).where(
        Build.id.in_(ended), Build.status == QUEUED
    ).execute()
    outbox.record_ids(ended, CANCELLED)
    if running:
        Build.update(cancel_requested=reason).where(
            Build.key == build.key, Build.status.in_(ACTIVE), Build.cancel_requested == ""
        ).execute()


def get(build_id: int | str) -> Build:
    """A build by id: ASCII digits only (int() would also take "1_0", " 1" and "١")."""
    if not _ID.fullmatch(str(build_id)):
        raise UserError(f"build id must be a number, got {str(build_id)[:40]!r}")
    number = int(build_id)
    if not 0 < number < 2**63:  # past SQLite's integers: no such build, not a crash
        raise UserError(f"no build {number}", status=404)
    build = Build.get_or_none(Build.id == number)
    if build is None:
        raise UserError(f"no build {number}", status=404)
    return build


def cancel(build_id: int | str, reason: str = "cancelled by user") -> Build:
    """A queued build ends at once; a running one is stopped by its worker's watchdog."""
    build = get(build_id)
    with write_lock():
        ended = (
            Build.update(status=CANCELLED, finished_at=time.time(), error=reason)
            .where(Build.id == build.id, Build.status == QUEUED)
            .execute()
        )
        if ended:
            outbox.record(build, CANCELLED)
        else:
            Build.update(cancel_requested=reason).where(
                Build.id == build.id, Build.status.in_(ACTIVE), Build.cancel_requested == ""
            ).execute()
    if not ended and build.is_final:
        raise UserError(f"build {build.id} already ended: {build.status}", status=409)
    return get(build.id)


def retry(build_id: int | str) -> Build:
    """A new build with the same job, branch, commit and params."""
    old = get(build_id)
    return trigger(
        old.job,
        branch=old.branch,
        commit=old.commit,
        params=old.param_dict,
        trigger=f"retry of #{old.number}",
        retry_of=old.id,
        origin=origin_of(old),
        priority=old.priority,
    )


def origin_of(build: Build) -> dict[str, Any]:
    """What a retry keeps of where the build came from."""
    names = ("pr", "pr_base", "pr_ref", "fork", "tag", "forge")
    return {name: getattr(build, name) for name in names}
