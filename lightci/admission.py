"""Admission by memory: the budget, what a build is expected to need, and learning it.

A build's expected peak is the job's `memory` when set (stored on the row at
trigger), else the highest peak of its key's last few builds (``key_stat``),
else ``[builds] memory_default``. What a build used is measured while it runs:
the stage cgroup's own peak where there is one (lightci.cgroup), else the
watchdog's samples of the stage's process tree RSS (lightci.peaks). The numbers live
in the database, so a restarted server knows them. The rule that uses them is
the claim (lightci.claims); the queue's forecast replays it (lightci.eta).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from lightci.config import Settings, parse_memory
from lightci.errors import UserError
from lightci.jobs import Job
from lightci.models import FINAL, SUCCESS, run_sql, sql_list, write_lock

log = logging.getLogger(__name__)

GB = 1024**3
UNLIMITED = 2**62  # the budget when admission by memory is off: everything fits
RECENT = 5  # builds of a key its learned numbers come from
PRIORITY_RANGE = (-(2**31), 2**31)
RECORD_STEP = 32 * 1024**2  # bytes a running build's peak grows by before the row is updated

_PEAK_SQL = f"""
    SELECT MAX(memory_peak) FROM (
        SELECT memory_peak FROM build
        WHERE key = ? AND memory_peak IS NOT NULL AND status IN {sql_list(FINAL)}
        ORDER BY id DESC LIMIT {RECENT}) AS recent
"""
_DURATION_SQL = f"""
    SELECT AVG(finished_at - started_at) FROM (
        SELECT started_at, finished_at FROM build
        WHERE key = ? AND status = '{SUCCESS}' AND started_at IS NOT NULL
          AND finished_at IS NOT NULL
        ORDER BY id DESC LIMIT {RECENT}) AS recent
"""
_PEAK_GREW_SQL = "UPDATE build SET memory_peak = ? WHERE id = ? AND COALESCE(memory_peak, 0) < ?"
_LEARNED_SQL = """
    INSERT INTO key_stat ("key", peak, duration, updated_at) VALUES (?, ?, ?, ?)
    ON CONFLICT ("key") DO UPDATE
    SET peak = excluded.peak, duration = excluded.duration, updated_at = excluded.updated_at
"""


def budget(cfg: Settings) -> int:
    """Bytes the running builds' expected peaks may add up to (UNLIMITED when off)."""
    given = cfg["builds"]["memory_budget"]
    if not given:
        return UNLIMITED
    if given == "auto":
        # "" passes the settings' check: nothing held back (it crashed every claim)
        reserve = _size(cfg, "memory_reserve") if cfg["builds"]["memory_reserve"] else 0
        return max(0, machine_memory() - reserve)
    return _size(cfg, "memory_budget")


def machine_memory() -> int:
    """Bytes of RAM (POSIX sysconf, as psutil reads it on Linux: `lightci trigger`
    and `status` load no psutil)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_peak(cfg: Settings) -> int:
    return _size(cfg, "memory_default")


def starve_after(cfg: Settings) -> int:
    return cfg["builds"]["starve_after"]


def _size(cfg: Settings, name: str) -> int:
    try:
        return parse_memory(cfg["builds"][name])
    except ValueError:
        raise UserError(f'[builds] {name} must be a size such as "6G"') from None


def job_memory(job: Job) -> int | None:
    """The job's `memory` in bytes: a build of it is expected to stay under its limit."""
    return parse_memory(job.memory) if job.memory else None


def priority(job: Job, given: Any) -> int:
    """A trigger's priority (CLI -P, API, form), else the job's."""
    if given is None or given == "":
        return job.priority
    if isinstance(given, str):
        try:
            given = int(given.strip())
        except ValueError:
            raise UserError(f"priority must be a whole number, got {given!r}") from None
    if not isinstance(given, int) or isinstance(given, bool):
        raise UserError(f"priority must be a whole number, got {given!r}")
    if not PRIORITY_RANGE[0] < given < PRIORITY_RANGE[1]:
        raise UserError("priority must be between -2147483647 and 2147483647")
    return given


def record(held: list[Any]) -> None:
    """Write a running build's `memory_peak` when first measured (the API shows it while
    the build runs), then once it grew by a step since last written: the claim counts
    it when it passes the expected peak, so it must not lag far behind."""
    for watched in held:
        peak, written = watched.memory_peak, watched.memory_written
        if peak and (not written or peak >= written + RECORD_STEP):
            try:
                run_sql(_PEAK_GREW_SQL, peak, watched.build_id, peak)
            except Exception as exc:  # a full disk: the next growth, or the release, writes it
                log.debug("build %s: memory_peak not written: %s", watched.build_id, exc)
                continue
            watched.memory_written = peak


def learn(key: str) -> None:
    """After a build of the key ended: its expected peak and duration from its recent builds.

    Best effort: a refused write (a full disk) leaves the last numbers, and the
    key's next build learns them again from the build rows.
    """
    try:
        _learn(key)
    except Exception as exc:
        log.warning("key %s: expected peak and duration not updated: %s", key, exc)


def _learn(key: str) -> None:
    peak = run_sql(_PEAK_SQL, key).fetchone()[0]
    duration = run_sql(_DURATION_SQL, key).fetchone()[0]
    if peak is None and duration is None:
        return
    with write_lock():
        run_sql(_LEARNED_SQL, key, peak, duration, time.time())


def gb(size: float) -> str:
    return f"{size / GB:.1f}"
