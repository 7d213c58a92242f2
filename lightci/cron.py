"""Scheduled builds: `schedule = ["0 3 * * *"]` and `[[schedules]]` in job.toml (cron, UTC).

The scheduler process asks at the start of every minute (cron's slots are
whole minutes: the scheduler's clock runs ``fire_due`` first). Each schedule has a mark: the
moment it was last looked at. A schedule is due when a cron slot fell between
its mark and now; then it queues ONE build and moves its mark to now, in one
transaction. So a run missed while lightci was down runs once when it comes
back, not once per missed slot, and a schedule seen for the first time waits
for its next slot. A schedule whose cron, branch or params change is a new one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime

from peewee import CharField, DoubleField

from lightci import builds, jobs
from lightci.config import settings
from lightci.errors import UserError
from lightci.models import BaseModel, db, write_lock

log = logging.getLogger(__name__)


class ScheduleMark(BaseModel):
    job = CharField()
    spec = CharField(max_length=2000)  # the schedule as JSON: cron, branch, params
    seen_at = DoubleField()

    class Meta:
        table_name = "schedule_mark"
        indexes = ((("job", "spec"), True),)


_table_ready = threading.Lock()
_ready_for: list = []


def _ensure_table() -> None:
    with _table_ready:
        if db.obj not in _ready_for:
            ScheduleMark.create_table(safe=True)
            _ready_for[:] = [db.obj]


WEEKDAYS = "sun mon tue wed thu fri sat".split()


def aps_weekdays(field: str) -> str:
    """A cron weekday field (0 or 7 = Sunday) in APScheduler 3's numbering (0 = Monday),
    which its from_crontab does not translate: "1-5" would mean Tuesday to Saturday."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = 0, 6
        else:
            ends = [e if e.isdigit() else str(WEEKDAYS.index(e.lower())) for e in span.split("-")]
            first, last = int(ends[0]), int(ends[-1])
            if step and len(ends) == 1:
                last = 6
        days.update(d % 7 for d in range(first, last + 1, int(step or 1)))
    return ",".join(str((d - 1) % 7) for d in sorted(days))


def due_slot(cron: str, after: float, now: float) -> datetime | None:
    """The first slot of `cron` after `after`, if it is not later than `now`.

    When both the day of month and the weekday are restricted, cron fires on either
    ("0 0 1 * mon": the 1st, and every Monday); APScheduler wants both, so each is
    asked alone and the sooner slot wins.
    """
    # APScheduler (with asyncio and importlib.metadata: ~4 MB) loads with the first
    # schedule: a home without one does without it (see lightci.schedule).
    from apscheduler.triggers.cron import CronTrigger

    fields = cron.split()
    fields[4] = aps_weekdays(fields[4])
    either = [fields]
    if fields[2] != "*" and fields[4] != "*":
        either = [[*fields[:4], "*"], [*fields[:2], "*", *fields[3:]]]
    start = datetime.fromtimestamp(after + 0.001, UTC)
    slots = [
        CronTrigger.from_crontab(" ".join(f), timezone=UTC).get_next_fire_time(None, start)
        for f in either
    ]
    slot = min((s for s in slots if s is not None), default=None)
    return slot if slot is not None and slot.timestamp() <= now else None


def scheduled() -> bool:
    """Some job that loads has a schedule."""
    return any(job.schedules for job in jobs.load_all(settings())[0])


def fire_due(now: float | None = None) -> list[int]:
    """Queue one build for every schedule with a slot since its mark; returns their ids."""
    _ensure_table()
    now = time.time() if now is None else now
    good, broken = jobs.load_all(settings())
    fired = []
    for job in good:
        for entry in job.schedules:
            spec = json.dumps(entry, sort_keys=True)
            mark = ScheduleMark.get_or_none(job=job.name, spec=spec)
            if mark is None:  # first seen: its first run is its next slot
                ScheduleMark.insert(
                    job=job.name, spec=spec, seen_at=now
                ).on_conflict_ignore().execute()
                continue
            try:
                slot = due_slot(entry["cron"], mark.seen_at, now)
            except ValueError as exc:  # job.toml checked the line; APScheduler may still refuse
                log.warning("schedule %r of job %s: %s", entry["cron"], job.name, exc)
                continue
            if slot is not None:
                fired += _fire(job.name, entry, mark, now, slot)
    _forget_gone(good, broken)
    return fired


def _forget_gone(good: list, broken: dict) -> None:
    """Marks of schedules no job has any more (removed, changed, their job deleted) go:
    one added back later is new again and waits for its next slot. A broken job.toml
    keeps its job's marks until it loads again."""
    kept = {(job.name, json.dumps(e, sort_keys=True)) for job in good for e in job.schedules}
    gone = [
        mark.id
        for mark in ScheduleMark.select(ScheduleMark.id, ScheduleMark.job, ScheduleMark.spec)
        if mark.job not in broken and (mark.job, mark.spec) not in kept
    ]
    if gone:
        with write_lock():
            ScheduleMark.delete().where(ScheduleMark.id.in_(gone)).execute()


def _fire(job: str, entry: dict, mark: ScheduleMark, now: float, slot: datetime) -> list[int]:
    with write_lock():  # the mark moves with the build it queued, or not at all
        moved = (
            ScheduleMark.update(seen_at=now)
            .where(ScheduleMark.id == mark.id, ScheduleMark.seen_at == mark.seen_at)
            .execute()
        )
        if not moved:  # another scheduler process fired it
            return []
        try:
            build = builds.trigger(
                job,
                branch=entry["branch"],
                params=entry["params"],
                trigger=f"schedule {entry['cron']}",
            )
        except UserError as exc:  # a bad param: the log says so, the next slot tries again
            log.warning("schedule %r of job %s queued nothing: %s", entry["cron"], job, exc)
            return []
    log.info("schedule %r of job %s (slot %s) queued build %s", entry["cron"], job, slot, build.id)
    return [build.id]
