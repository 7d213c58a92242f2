"""Scheduled upkeep: functions run every N seconds or daily at HH:MM, by APScheduler.

The process that starts the scheduler (``lightci scheduler`` or ``lightci
serve``) passes the list of jobs explicitly; nothing registers itself on
import. A schedule may name a setting ("upkeep.sweep_interval"), which is
re-read while the scheduler runs, so a changed lightci.toml applies::

    Scheduler([every("upkeep.sweep_interval", recovery.sweep),
               daily("upkeep.retention_at", retention.retention)]).start()
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from tzlocal import get_localzone

from lightci.config import Settings, settings
from lightci.errors import UserError

log = logging.getLogger(__name__)

REFRESH = 10  # seconds between looks at lightci.toml for changed schedules


@dataclass
class UpkeepJob:
    """A function and when it runs: every N seconds, or daily at HH:MM local time."""

    func: Callable[[], Any]
    every: float | str | None = None
    at: str | None = None
    applied: Any = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"

    @property
    def setting(self) -> tuple[str, str] | None:
        """("upkeep", "sweep_interval") when the schedule names a setting."""
        value = self.every if self.every is not None else self.at
        if isinstance(value, str) and "." in value and ":" not in value:
            section, name = value.split(".", 1)
            return section, name
        return None

    def when(self, cfg: Settings) -> float | str:
        if self.setting:
            section, name = self.setting
            return cfg[section][name]
        return self.every if self.every is not None else self.at

    def where(self) -> str:
        """What a person edits to change this schedule."""
        return f"[{self.setting[0]}] {self.setting[1]}" if self.setting else f"upkeep job {self.id}"


def every(seconds: float | str, func: Callable[[], Any]) -> UpkeepJob:
    """Run func every `seconds` (a number or a setting's name)."""
    return UpkeepJob(func, every=seconds)


def daily(at: str, func: Callable[[], Any]) -> UpkeepJob:
    """Run func daily at `at` ("HH:MM" local time, or a setting's name)."""
    return UpkeepJob(func, at=at)


def trigger_for(job: UpkeepJob, cfg: Settings) -> IntervalTrigger | CronTrigger:
    value = job.when(cfg)
    if job.every is not None:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = 0
        if not seconds > 0:
            raise UserError(f"{job.where()}: expected a positive number of seconds, got {value!r}")
        return IntervalTrigger(seconds=seconds, timezone="UTC")
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value).strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise UserError(f"{job.where()}: expected a time HH:MM, got {value!r}")
    return CronTrigger(hour=int(match[1]), minute=int(match[2]), timezone=get_localzone())


def _guarded(job: UpkeepJob) -> Callable[[], None]:
    """A failing run is logged; the job runs again at its next time."""

    def run() -> None:
        try:
            job.func()
        except Exception:
            log.exception("upkeep job %s failed", job.id)

    return run


class Scheduler:
    """APScheduler in this process, running the jobs it was given."""

    def __init__(self, jobs: list[UpkeepJob]):
        self.jobs = list(jobs)
        self._lock = threading.Lock()
        self._aps = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )

    def start(self) -> Scheduler:
        cfg = settings()
        with self._lock:
            for job in self.jobs:
                self._schedule(job, cfg)
            self._aps.add_job(self.refresh, "interval", seconds=REFRESH, id="schedule.refresh")
            self._aps.start()
        log.info("upkeep scheduler started: %s", ", ".join(j.id for j in self.jobs))
        return self

    def add(self, job: UpkeepJob) -> None:
        """One more job on a running scheduler."""
        with self._lock:
            self.jobs = [j for j in self.jobs if j.id != job.id] + [job]
            self._schedule(job, settings())

    def ids(self) -> set[str]:
        return {job.id for job in self._aps.get_jobs()}

    def refresh(self) -> None:
        """Reschedule the jobs whose setting changed in lightci.toml."""
        cfg = settings()
        with self._lock:
            for job in self.jobs:
                try:
                    if job.when(cfg) != job.applied:
                        log.info("rescheduling %s: %r -> %r", job.id, job.applied, job.when(cfg))
                        self._schedule(job, cfg)
                except UserError:
                    log.exception("keeping the old schedule")

    def shutdown(self, wait: bool = True) -> None:
        self._aps.shutdown(wait=wait)

    def _schedule(self, job: UpkeepJob, cfg: Settings) -> None:
        trigger = trigger_for(job, cfg)
        job.applied = job.when(cfg)
        self._aps.add_job(_guarded(job), trigger, id=job.id, name=job.id, replace_existing=True)
