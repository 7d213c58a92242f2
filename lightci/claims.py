"""Claim, heartbeat and release: the key-exclusion, slot and memory rules.

The whole scheduling rule is ``claim``: in one serialised write transaction,
if fewer than ``slots`` builds are active, take the queued build that
ADMIT_SQL puts first and write the lease on it. A candidate is the oldest
queued build of a key with no active build (and that has not outwaited its
queue_timeout), so FIFO within a key holds whatever the priorities; it is
admitted when its expected peak plus the running builds' fits the memory
budget, or when nothing runs (a build bigger than the budget runs alone).
Candidates go by priority, then age; once the oldest has waited past
``starve_after`` it is the only candidate, so nothing passes it. A partial
unique index on ``key`` for active builds backs the key rule in the database.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from lightci import admission, outbox
from lightci.config import hostname, settings
from lightci.database import column_list
from lightci.models import ACTIVE_IN, QUEUED, RUNNING, Build, run_sql, write_lock

ACTIVE_SQL = f"SELECT COUNT(*) FROM build WHERE status IN {ACTIVE_IN}"
BUSY_SQL = f"SELECT 1 FROM build WHERE status = '{QUEUED}' OR status IN {ACTIVE_IN} LIMIT 1"

# Parameters: default peak, now, now, now, starve_after, budget.
ADMIT_SQL = f"""
    WITH heads AS (  -- the oldest runnable build of each free key, and its expected peak
        SELECT b.id, b.priority, b.queued_at, COALESCE(b.memory_expected, k.peak, ?) AS need
        FROM build AS b LEFT JOIN key_stat AS k ON k.key = b.key
        WHERE b.status = '{QUEUED}'
          AND b.queued_at >= ? - b.queue_timeout
          AND NOT EXISTS (SELECT 1 FROM build AS r
                          WHERE r.key = b.key AND r.status IN {ACTIVE_IN})
          AND NOT EXISTS (SELECT 1 FROM build AS o
                          WHERE o.key = b.key AND o.status = '{QUEUED}' AND o.id < b.id
                            AND o.queued_at >= ? - o.queue_timeout)
    ),
    running AS (  -- each at its expected peak, or what it was measured to use when more
        SELECT COUNT(*) AS n,
               COALESCE(SUM(CASE WHEN memory_peak > memory_expected THEN memory_peak
                                 ELSE memory_expected END), 0) AS used
        FROM build WHERE status IN {ACTIVE_IN}
    ),
    starving AS (  -- the oldest candidate, once it has waited past starve_after
        SELECT id FROM heads WHERE queued_at < ? - ? ORDER BY queued_at, id LIMIT 1
    )
    SELECT h.id, h.need FROM heads AS h, running AS r
    WHERE (r.used + h.need <= ? OR r.n = 0)
      AND (h.id IN (SELECT id FROM starving) OR NOT EXISTS (SELECT 1 FROM starving))
    ORDER BY h.priority DESC, h.id
    LIMIT 2
"""

LEASE_SQL = f"""
    UPDATE build SET status = '{RUNNING}', started_at = ?, host = ?, pid = ?, heartbeat_at = ?,
                     memory_expected = ?
    WHERE id = ? AND status = '{QUEUED}'
"""


@dataclass(frozen=True)
class Lease:
    """Who holds a build: the worker process, by host and PID."""

    host: str
    pid: int

    @classmethod
    def mine(cls) -> Lease:
        return cls(hostname(), os.getpid())


@dataclass(frozen=True)
class Claim:
    build: Build
    more: bool  # another build is runnable and a slot is free: wake another worker


def claim(lease: Lease, *, now: float | None = None, look_first: bool = True) -> Claim | None:
    """Take the next runnable build for this worker, or None; ``now`` fixes the clock (tests).

    look_first=False skips the read-only look (_worth_a_try): a worker that
    has just ended a build freed a slot, and its claim most likely succeeds.
    """
    cfg = settings()
    slots = cfg.slots
    now = time.time() if now is None else now
    admit = (
        admission.default_peak(cfg),
        now,
        now,
        now,
        admission.starve_after(cfg),
        admission.budget(cfg),
    )
    if look_first and not _worth_a_try(slots, admit):
        return None
    with write_lock():
        active = run_sql(ACTIVE_SQL).fetchone()[0]
        if active >= slots:
            return None
        rows = run_sql(ADMIT_SQL, *admit).fetchall()
        if not rows:
            return None
        build_id, need = rows[0]
        run_sql(LEASE_SQL, now, lease.host, lease.pid, now, need, build_id)
        build = build_by_id(build_id)
        outbox.record(build, RUNNING)
    # The second candidate may share the claimed key or not fit now; claim() will decide.
    return Claim(build, more=len(rows) > 1 and active + 1 < slots)


def at_rest() -> bool:
    """No build queued, running or deploying, by any process of the home (one indexed look)."""
    return run_sql(BUSY_SQL).fetchone() is None


def _worth_a_try(slots: int, admit: tuple) -> bool:
    """The same questions as the claim, read-only: most wake-ups find the slots
    full or nothing admissible, and need not queue for the write lock to learn it."""
    if slots <= 0 or run_sql(ACTIVE_SQL).fetchone()[0] >= slots:
        return False
    return run_sql(ADMIT_SQL, *admit).fetchone() is not None


HEARTBEAT_SQL = (
    f"UPDATE build SET heartbeat_at = ? WHERE host = ? AND pid = ? AND status IN {ACTIVE_IN}"
)


def heartbeat(lease: Lease) -> int:
    """Prove this worker is alive for every build it holds."""
    with write_lock():
        return run_sql(HEARTBEAT_SQL, time.time(), lease.host, lease.pid).rowcount


def release(build_id: int, status: str, **fields) -> bool:
    """End an active build; False when someone else (a sweeper, force-unlock) ended it first."""
    fields.setdefault("finished_at", time.time())
    # Plain SQL: peewee would compose the UPDATE anew for every build. The names
    # are the callers' keywords, never input; one that is no column fails here.
    assignments, values = "", []
    for name, value in fields.items():
        column = Build._meta.fields[name]
        assignments += f', "{column.column_name}" = ?'
        values.append(column.db_value(value))
    with write_lock():  # the state and its deliveries commit together
        ended = run_sql(
            f"UPDATE build SET status = ?{assignments} WHERE id = ? AND status IN {ACTIVE_IN}",
            status,
            *values,
            build_id,
        )
        if ended.rowcount != 1:
            return False
        build = build_by_id(build_id)
        outbox.record(build, status)
    admission.learn(build.key)
    return True


_BUILD_FIELDS = Build._meta.sorted_fields
_BUILD_BY_ID = f"SELECT {column_list(_BUILD_FIELDS)} FROM build WHERE id = ?"


def build_by_id(build_id: int) -> Build:
    """Build.get_by_id, without peewee composing the SELECT and its row converters
    anew (0.4 ms): the claim and the release of every build ask for it."""
    row = run_sql(_BUILD_BY_ID, build_id).fetchone()
    if row is None:
        raise Build.DoesNotExist(f"no build with id {build_id}")
    values = zip(_BUILD_FIELDS, row, strict=True)
    return Build(**{f.name: v if v is None else f.python_value(v) for f, v in values})
