"""Scheduled upkeep: functions run every N seconds or daily at HH:MM local time, each
on a thread of its own that sleeps between runs.

The process that starts the scheduler (``lightci scheduler`` or ``lightci
serve``) passes the list of jobs explicitly; nothing registers itself on
import. A schedule may name a setting ("upkeep.sweep_interval"), which is
re-read while the scheduler runs, so a changed lightci.toml applies::

    Scheduler([every("upkeep.sweep_interval", recovery.sweep),
               daily("upkeep.retention_at", retention.retention)]).start()

A paced job says itself when it is next due: it returns a time (epoch
seconds), runs again then or after its longest wait, whichever comes first,
and at once when this process sets its event (deploy.launch sets
healthchecks.deploying after it started a container, for instance). So at
rest it sleeps, instead of looking every second for work that is not there.

Every-N-seconds jobs run on such a thread too (due: never sooner than N), and so
do daily jobs (due: the next time the local clock reads HH:MM; the thread looks
at the clock at least hourly, so a clock set forward or a VM that slept is caught
up within the hour). A thread waking on an Event costs a fraction of
APScheduler's pass over its job store, trigger arithmetic and thread-pool
hand-off, which `serve` paid a few times a second at rest; and without
APScheduler's scheduler, a process at rest loads none of APScheduler (with the
asyncio and importlib.metadata it imports, ~4 MB): cron.py loads its
CronTrigger for the first job with a schedule.

At rest even a wake a minute per job adds up: on a VM, each wake of a thread
that slept for seconds costs CPU in milliseconds, not microseconds (4 ms for a
bare Event.wait, 20-60 ms for a sweep that takes 0.09 ms warm: cold caches).
So the jobs that only look around (cron's slots, disk, removed deploys,
leftovers, the schedules' refresh) are `minutely`: they run one after another
on the scheduler's clock thread, at every whole minute. And in a scheduler made with
rests=True (`serve`, where this process's drains and deploys wake its paced
jobs), a paced job with a `look` that says nothing is due sleeps until
woken; the clock asks its look once a minute for work another process made.
When its `quiet` says nothing is about (`serve`: no build, deployment, unsent
delivery or schedule), the clock turns every QUIET_REST s instead, and at once
when this process stirs it (a drain's start).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lightci.config import Settings, settings
from lightci.errors import UserError

log = logging.getLogger(__name__)

REST = 60.0  # the clock turns at every whole minute: minutely jobs, looks, lightci.toml
QUIET_REST = 300.0  # seconds between the clock's turns while the home is quiet (Scheduler)
SHORTEST = 1.0  # seconds: no paced job runs again sooner unless woken
DAILY_LOOK = 3600.0  # seconds: a daily job's thread looks at the clock at least this often
DAY = 86400.0


@dataclass
class UpkeepJob:
    """A function and when it runs: every N seconds, or daily at HH:MM local time."""

    func: Callable[[], Any]
    every: float | str | None = None
    at: str | None = None
    paced: bool = False  # func returns when it is next due; `every` is its longest wait
    woken: threading.Event | None = field(default=None, repr=False)  # set: run a paced job now
    look: Callable[[], bool] | None = field(default=None, repr=False)  # work for a resting job?
    minutely: bool = False  # runs on the scheduler's clock thread, once a minute
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


def paced(
    longest: float | str,
    func: Callable[[], float | None],
    woken: threading.Event | None = None,
    look: Callable[[], bool] | None = None,
) -> UpkeepJob:
    """Run func again when it says (its return value, epoch seconds; None: no sooner than
    `longest`), after `longest` seconds at most (another process may have made work),
    and at once when this process sets `woken`. With `look`, in a resting scheduler, a
    None means: until woken, or until the clock's look finds work."""
    return UpkeepJob(func, every=longest, paced=True, woken=woken, look=look)


def minutely(func: Callable[[], Any]) -> UpkeepJob:
    """Run func at every whole minute on the scheduler's clock thread, after the minutely
    jobs before it (each must be quick: a look, not a long job)."""
    return UpkeepJob(func, every=REST, minutely=True)


def daily(at: str, func: Callable[[], Any]) -> UpkeepJob:
    """Run func daily at `at` ("HH:MM" local time, or a setting's name)."""
    return UpkeepJob(func, at=at)


def checked(job: UpkeepJob, cfg: Settings) -> float | tuple[int, int]:
    """The job's schedule in cfg: seconds (every, paced, minutely) or (hour, minute) (daily);
    a UserError naming what to edit when it is neither."""
    value = job.when(cfg)
    if job.every is not None:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = 0
        if not seconds > 0:
            raise UserError(f"{job.where()}: expected a positive number of seconds, got {value!r}")
        return seconds
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value).strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise UserError(f"{job.where()}: expected a time HH:MM, got {value!r}")
    return int(match[1]), int(match[2])


def next_daily(at: tuple[int, int], now: float) -> float:
    """The first moment after `now` (epoch seconds) at which the local clock reads HH:MM.

    mktime resolves the day after the last of a month, and a time a DST change skips
    or repeats, the way the C library's local time does everywhere else."""
    t = time.localtime(now)
    today = time.mktime((t.tm_year, t.tm_mon, t.tm_mday, *at, 0, 0, 0, -1))
    if today > now:
        return today
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday + 1, *at, 0, 0, 0, -1))


def _guarded(job: UpkeepJob) -> Callable[[], Any]:
    """A failing run is logged; the job runs again at its next time."""

    def run() -> Any:
        try:
            return job.func()
        except Exception:
            log.exception("upkeep job %s failed", job.id)
            return None

    return run


class Pacer:
    """One upkeep job's thread: run, then sleep its interval, or (paced) until due or woken,
    or (daily: `at` is its hour and minute) look at the clock until its time comes."""

    def __init__(
        self,
        job: UpkeepJob,
        rests: bool = False,
        at: tuple[int, int] | None = None,
        first: bool = True,
    ):
        self.job = job
        self.at = at
        self.first = first  # a daily job's first step runs it at once
        self.rests = rests and job.look is not None
        self.resting = False  # asleep until woken: the clock looks for its work
        self._woken = job.woken or threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lightci-{job.id}", daemon=True)
        self.last_wait: float | None = None  # what it chose after its last run (inf: rests)

    def start(self) -> Pacer:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._woken.set()

    def stop(self, wait: bool = True) -> None:
        self._stopped.set()
        self._woken.set()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def wait_for(self, due: float | None) -> float:
        """Seconds to sleep: until `due`, within [SHORTEST, the job's longest wait]."""
        # checked by `checked`; refresh() makes a new pacer when the setting changes
        longest = DAILY_LOOK if self.at else float(self.job.applied)
        if due is None:
            return longest
        return min(longest, max(SHORTEST, due - time.time()))

    def _daily(
        self, at: tuple[int, int], clock: Callable[[], float] = time.time
    ) -> Callable[[], float]:
        """A daily job's step: its function if its time has come, then its next time. The
        first step of a scheduler's first start runs it at once: a home never up at its
        hour still gets it."""
        run = _guarded(self.job)
        due = 0.0 if self.first else next_daily(at, clock())

        def step() -> float:
            nonlocal due
            now = clock()
            if now >= due:
                run()
                due = next_daily(at, clock())
            elif due - now > DAY + DAILY_LOOK:  # the clock was set back: its next time
                due = next_daily(at, now)
            return due

        return step

    def _run(self) -> None:
        if self.at is None:
            run = _guarded(self.job)
        else:  # a clock that mktime refuses is logged; the job looks again in DAILY_LOOK s
            run = _guarded(replace(self.job, func=self._daily(self.at)))
        while not self._stopped.is_set():
            due = run()
            if due is None and self.rests:
                self.last_wait, self.resting = math.inf, True
                self._woken.wait()
                self.resting = False
            else:
                paced = self.job.paced or self.at is not None
                self.last_wait = self.wait_for(due if paced else None)
                self._woken.wait(self.last_wait)
            self._woken.clear()


class Scheduler:
    """The jobs it was given: on threads of their own (every N seconds, paced, daily) or
    on its clock (minutely)."""

    def __init__(
        self,
        jobs: list[UpkeepJob],
        rests: bool = False,
        quiet: Callable[[], bool] | None = None,
        stirred: threading.Event | None = None,
    ):
        self.jobs = list(jobs)
        self.rests = rests
        # Asked after each turn: True while nothing is about for the clock to find (no
        # build, deployment, delivery or schedule); it then turns every QUIET_REST s,
        # and at once when this process sets `stirred` (a drain starts).
        self.quiet = quiet
        self._quiet_now = False
        self._next_turn = 0.0
        self._pacers: dict[str, Pacer] = {}
        clock = UpkeepJob(
            self._turn, every=QUIET_REST, paced=True, woken=stirred, applied=QUIET_REST
        )
        self._clock = Pacer(clock)
        self._lock = threading.Lock()

    def start(self) -> Scheduler:
        cfg = settings()
        with self._lock:
            for job in self.jobs:
                self._schedule(job, cfg, first=True)
            self._clock.start()
        log.info("upkeep scheduler started: %s", ", ".join(j.id for j in self.jobs))
        return self

    def add(self, job: UpkeepJob) -> None:
        """One more job on a running scheduler."""
        with self._lock:
            self.jobs = [j for j in self.jobs if j.id != job.id] + [job]
            self._schedule(job, settings())

    def ids(self) -> set[str]:
        minutely = {job.id for job in self.jobs if job.minutely}
        return set(self._pacers) | minutely

    def _turn(self) -> float:
        """The clock's thread: a turn when one is due, or when stirred in a quiet home
        (stirred while busy, the next whole minute stands)."""
        if self._quiet_now or time.time() >= self._next_turn:
            self._next_turn = self.tick()
        return self._next_turn

    def tick(self) -> float:
        """The clock's turn: the minutely jobs, resting jobs' looks, lightci.toml's schedules;
        returns the next whole minute (cron's next possible slot: cron.fire_due is one).

        In a quiet home nothing is about for the minutely jobs and the looks to find,
        and on a VM at rest each turn costs ~30-40 ms of CPU (cold caches): the next
        turn is QUIET_REST s away then, or as soon as this process stirs the clock."""
        for job in [j for j in self.jobs if j.minutely]:
            _guarded(job)()
        found = False
        for pacer in list(self._pacers.values()):
            if pacer.resting and _guarded(replace(pacer.job, func=pacer.job.look))():
                pacer.wake()
                found = True
        self.refresh()
        self._quiet_now = bool(
            not found and self.quiet is not None and _guarded(UpkeepJob(self.quiet))()
        )
        if self._quiet_now:
            return time.time() + QUIET_REST
        return (time.time() // REST + 1) * REST

    def waits(self) -> dict[str, float | None]:
        """Seconds each job sleeps between runs now: an interval job its interval, a
        paced job what it chose after its last run, a daily job until its time or
        DAILY_LOOK (None before its first run); minutely jobs are the clock's."""
        return {job_id: pacer.last_wait for job_id, pacer in self._pacers.items()}

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
        for pacer in [*self._pacers.values(), self._clock]:
            pacer.stop(wait=wait)

    def _schedule(self, job: UpkeepJob, cfg: Settings, first: bool = False) -> None:
        schedule = checked(job, cfg)  # a bad setting is refused here, whatever the kind
        job.applied = job.when(cfg)
        if job.minutely:
            return  # the clock runs it
        old = self._pacers.pop(job.id, None)
        if old is not None:
            old.stop(wait=False)
        at = schedule if isinstance(schedule, tuple) else None
        self._pacers[job.id] = Pacer(job, self.rests, at, first).start()
