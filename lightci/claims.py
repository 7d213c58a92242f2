"""Claim, heartbeat and release: the key-exclusion and slot rules.

The whole scheduling rule is ``claim``: in one serialised write transaction,
if fewer than ``slots`` builds are active, take the oldest queued build whose
key has no active build (and that has not outwaited its queue_timeout), and
write the lease on it. FIFO within a key follows: the oldest queued build of a
free key is always the one taken. A partial unique index on ``key`` for active
builds backs the key rule in the database itself.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from lightci import outbox
from lightci.config import hostname, settings
from lightci.models import ACTIVE, ACTIVE_IN, QUEUED, RUNNING, Build, run_sql, write_lock

ACTIVE_SQL = f"SELECT COUNT(*) FROM build WHERE status IN {ACTIVE_IN}"

RUNNABLE_SQL = f"""
    SELECT b.id FROM build AS b
    WHERE b.status = '{QUEUED}'
      AND b.queued_at >= ? - b.queue_timeout
      AND NOT EXISTS (SELECT 1 FROM build AS r
                      WHERE r.key = b.key AND r.status IN {ACTIVE_IN})
    ORDER BY b.id
    LIMIT 2
"""

LEASE_SQL = f"""
    UPDATE build SET status = '{RUNNING}', started_at = ?, host = ?, pid = ?, heartbeat_at = ?
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


def claim(lease: Lease, *, now: float | None = None) -> Claim | None:
    """Take the next runnable build for this worker, or None; ``now`` fixes the clock (tests)."""
    slots = settings().slots
    now = time.time() if now is None else now
    if not _worth_a_try(slots, now):
        return None
    with write_lock():
        active = run_sql(ACTIVE_SQL).fetchone()[0]
        if active >= slots:
            return None
        ids = [row[0] for row in run_sql(RUNNABLE_SQL, now).fetchall()]
        if not ids:
            return None
        run_sql(LEASE_SQL, now, lease.host, lease.pid, now, ids[0])
        build = Build.get_by_id(ids[0])
        outbox.record(build, RUNNING)
    # The second candidate may share the claimed key; claim() will decide.
    return Claim(build, more=len(ids) > 1 and active + 1 < slots)


def _worth_a_try(slots: int, now: float) -> bool:
    """The same two questions as the claim, read-only: most wake-ups find the slots
    full or nothing runnable, and need not queue for the write lock to learn it."""
    if slots <= 0 or run_sql(ACTIVE_SQL).fetchone()[0] >= slots:
        return False
    return run_sql(RUNNABLE_SQL, now).fetchone() is not None


def heartbeat(lease: Lease) -> int:
    """Prove this worker is alive for every build it holds."""
    return (
        Build.update(heartbeat_at=time.time())
        .where(Build.host == lease.host, Build.pid == lease.pid, Build.status.in_(ACTIVE))
        .execute()
    )


def release(build_id: int, status: str, **fields) -> bool:
    """End an active build; False when someone else (a sweeper, force-unlock) ended it first."""
    fields.setdefault("finished_at", time.time())
    with write_lock():  # the state and its deliveries commit together
        updated = (
            Build.update(status=status, **fields)
            .where(Build.id == build_id, Build.status.in_(ACTIVE))
            .execute()
        )
        if updated == 1:
            outbox.record(Build.get_by_id(build_id), status)
    return updated == 1
