"""Recovery: builds whose worker is gone end lost, the queue expires, nothing waits unseen.

A lightci home runs unattended for months: workers get OOM-killed, machines
reboot mid-build. The job table is the truth, so recovery only has to find
rows that nobody is working on and settle them:

    sweep       every [upkeep] sweep_interval s (the scheduler and every worker;
                a worker at rest once a minute): lost workers, expired queue, re-dispatch
    reconcile   once at a process's start: this host's dead workers, a wake-up
    force_unlock  the escape hatch for a person

Liveness rests on heartbeats; on the worker's own host psutil also tells at
once whether its process is gone (Linux and macOS alike).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightci import builds, outbox, queues, sandbox, wakeups, workspace
from lightci.config import Settings, hostname, settings
from lightci.errors import UserError
from lightci.models import (
    ACTIVE,
    EXPIRED,
    FINAL,
    LOST,
    QUEUED,
    RUNNING,
    Build,
    Stage,
    run_sql,
    sql_list,
    write_lock,
)

log = logging.getLogger(__name__)

# Builds this process leased before an exec (Huey's SIGHUP restart keeps the
# PID) are orphans too; anything it claims later started after this moment.
IMPORTED_AT = time.time()
WORKER_MARKS = ("huey_consumer", "lightci")


# -- liveness and the processes of a build ------------------------------------


def worker_alive(host: str, pid: int | None, home: Path | None = None) -> bool | None:
    """Same host: is PID a live lightci worker? Other hosts: None (only heartbeats tell).

    A worker is a process whose command line names huey_consumer or lightci, or
    one that has a file of this home open (its job table, its queue). A zombie
    is dead; a reused PID belongs to some other program.
    """
    if host != hostname():
        return None
    if not pid:
        return False
    import psutil  # see peaks: a worker at rest does without it

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(proc.cmdline())
        if any(mark in cmdline for mark in WORKER_MARKS):
            return True
        prefix = f"{home or settings().home}/"
        return any(f.path.startswith(prefix) for f in proc.open_files())
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process we cannot look into: not ours to call dead


def kill_build(cfg: Settings, build: Build) -> int:
    """SIGKILL the build's process group and every process of its environment on this host.

    First no stage of it may start any more: the worker that ran it may be
    alive (force-unlock; one stopped or swapped out past orphan_after) and on
    its way to the next one (see lightci.stageproc).
    """
    if build.host != hostname():
        return 0
    root = workspace.build_root(cfg, build.job, build.number)
    try:
        workspace.mark_ended(root)
    except OSError as exc:  # a full disk: what runs now still dies
        log.error("%s: could not mark it ended: %s", build.label(), exc)
    killed: set[int] = set()
    # Twice: a stage its worker started during the first look was still between vfork
    # and exec then, without the build's environment; after its exec the second finds it.
    for _ in range(2):
        procs = sandbox.processes_of(root / "workspace")
        if build.pgid and build.pgid in procs.values():
            _send(os.killpg, build.pgid)
        for pid in procs:
            _send(os.kill, pid)
        killed.update(procs)
    return len(killed)


def _send(kill: Callable[[int, int], None], target: int) -> None:
    try:
        kill(target, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- the sweep: lost workers, expired queue, re-dispatch ------------------------


def why_lost(build: Build, cfg: Settings, now: float) -> str:
    """Why a running build counts as lost, or "" while its worker is alive."""
    who = f"worker {build.pid} on host {build.host}"
    if build.host == hostname():
        if build.pid == os.getpid() and (build.started_at or 0) < IMPORTED_AT:
            return f"{who} died"  # this process was restarted (exec) since it leased the build
        if worker_alive(build.host, build.pid, cfg.home) is False:
            return f"{who} died"
    orphan_after = cfg["builds"]["orphan_after"]
    beat = build.heartbeat_at or build.started_at or build.queued_at
    if now - beat > orphan_after:
        return f"{who} died (no heartbeat for {int(now - beat)} s)"
    return ""


def end_orphans() -> list[int]:
    """End running builds whose worker is gone as lost, kill their processes, wake the queue.

    Only 'running' builds: a 'deploying' build is the deploy health checks' to settle.
    """
    cfg = settings()
    now = time.time()
    ended = []
    for build in list(Build.select().where(Build.status == RUNNING)):
        reason = why_lost(build, cfg, now)
        if not reason:
            continue
        same_lease = (
            (Build.status == RUNNING)
            & (Build.host == build.host)
            & (Build.pid == build.pid)
            & (Build.heartbeat_at.is_null() | (Build.heartbeat_at <= (build.heartbeat_at or now)))
        )
        if end_lost(cfg, build.id, reason, same_lease):
            log.warning("%s (id %s) lost: %s", build.label(), build.id, reason)
            ended.append(build.id)
    if ended:
        wakeups.wake()
    return ended


def end_lost(cfg: Settings, build_id: int, reason: str, still) -> bool:
    """End one build lost if `still` holds, and kill its processes, in one write transaction.

    Claims wait on the same lock, so the key is never free while the old build's
    processes still run; a live worker's own release waits too, then finds the
    build ended and changes nothing.
    """
    with write_lock():
        build = Build.get_or_none((Build.id == build_id) & still)
        if build is None:
            return False
        now = time.time()
        Build.update(status=LOST, finished_at=now, error=reason).where(
            Build.id == build_id
        ).execute()
        # Its stage was running: it ends now (its duration stops growing), code unknown.
        Stage.update(finished_at=now).where(
            Stage.build == build_id, Stage.finished_at.is_null()
        ).execute()
        outbox.record(build, LOST)
        kill_build(cfg, build)
    workspace.append_log(cfg, build, f"[lightci] ended lost: {reason}\n")
    return True


def expire_queued() -> list[int]:
    """Queued builds that waited longer than their queue_timeout end 'expired'."""
    now = time.time()
    ended = []
    late = Build.select().where(Build.status == QUEUED, Build.queued_at + Build.queue_timeout < now)
    for build in list(late):
        reason = f"waited longer than queue_timeout ({build.queue_timeout} s)"
        with write_lock():  # the state and its deliveries commit together
            updated = (
                Build.update(status=EXPIRED, finished_at=now, error=reason)
                .where(Build.id == build.id, Build.status == QUEUED)
                .execute()
            )
            if updated:
                outbox.record(build, EXPIRED)
        if updated:
            log.warning("%s (id %s) expired: %s", build.label(), build.id, reason)
            ended.append(build.id)
    return ended


def runnable_waiting() -> bool:
    """A queued build could start now: a slot and its key are free."""
    active = [b.key for b in Build.select(Build.key).where(Build.status.in_(ACTIVE))]
    if len(active) >= settings().slots:
        return False
    query = Build.select(Build.id).where(
        Build.status == QUEUED, Build.queued_at + Build.queue_timeout >= time.time()
    )
    if active:
        query = query.where(Build.key.not_in(active))
    return query.exists()


def redispatch() -> bool:
    """Wake the workers when a build could run but no wake-up is waiting for them.

    A SIGKILLed worker takes its dequeued message with it, and a restart loses
    nothing but may find nobody awake; the row is the truth, so look at it.
    """
    if runnable_waiting() and queues.pending() == 0:
        wakeups.wake()
        return True
    return False


_ENDED_WITH_GROUP = (
    f"SELECT 1 FROM build WHERE pgid IS NOT NULL AND status IN {sql_list(FINAL)} LIMIT 1"
)


def clear_leftovers(cfg: Settings) -> None:
    """Leases and wake-up pipes that outlived their build or process.

    An ended build's process group id may be reused by the system: clear it, so
    nothing ever signals a group that is no longer the build's.
    """
    ended = Build.select(Build.id).where(Build.status.in_(FINAL), Build.pgid.is_null(False))
    if run_sql(_ENDED_WITH_GROUP).fetchone():  # a read first: no write lock every sweep
        Build.update(pgid=None).where(Build.id.in_(ended)).execute()
    wakeups.remove_stale_bells(cfg)


# Lost, expired and re-dispatched builds are all running or queued ones.
_ANYTHING_TO_SWEEP = f"SELECT 1 FROM build WHERE status IN {sql_list((RUNNING, QUEUED))} LIMIT 1"


def sweep() -> dict[str, Any]:
    """One pass over the job table: what was lost, expired, woken; busy: a build runs or waits.

    At rest (nothing running or queued) one indexed look replaces the three
    passes, so a sweep every few seconds costs next to nothing.
    """
    cfg = settings()
    lost, expired, woken = [], [], False
    busy = bool(run_sql(_ANYTHING_TO_SWEEP).fetchone())
    if busy:
        lost = end_orphans()
        expired = expire_queued()
        woken = redispatch()
    clear_leftovers(cfg)
    return {"lost": lost, "expired": expired, "woken": woken, "busy": busy}


_reconciled = threading.Lock()
_reconcile_done = False


def reconcile() -> dict[str, Any]:
    """At start: builds of dead workers on this host end lost now, queued builds are woken."""
    lost = end_orphans()
    expired = expire_queued()
    queued = Build.select().where(Build.status == QUEUED).exists()
    if queued and not lost:
        wakeups.wake()
    return {"lost": lost, "expired": expired, "woken": queued or bool(lost)}


def reconcile_once() -> None:
    """reconcile() once per process (Huey calls start-up hooks once per worker thread)."""
    global _reconcile_done
    with _reconciled:
        if _reconcile_done:
            return
        try:
            reconcile()
        except Exception:
            log.exception("start-up reconciliation failed; the sweep will retry")
        _reconcile_done = True


# -- force-unlock: the escape hatch ----------------------------------------------


def force_unlock(build_id: int | str | None = None, all: bool = False) -> list[Build]:
    """End stuck active builds as lost and kill their processes; returns the ended builds."""
    cfg = settings()
    if all:
        targets = list(Build.select().where(Build.status.in_(ACTIVE)).order_by(Build.id))
    elif build_id is not None:
        build = builds.get(build_id)
        if build.status not in ACTIVE:
            raise UserError(f"build {build.id} is not running: {build.status}", status=409)
        targets = [build]
    else:
        raise UserError("name a BUILD to unlock, or --all")
    ended = []
    for build in targets:
        reason = f"force-unlocked (worker {build.pid} on host {build.host})"
        if end_lost(cfg, build.id, reason, Build.status.in_(ACTIVE)):
            ended.append(Build.get_by_id(build.id))
    if ended:
        wakeups.wake()
    return ended
