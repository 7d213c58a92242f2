"""Upkeep: the jobs APScheduler runs in one process, and the crash-safety they give.

A lightci home runs unattended for months: workers get OOM-killed, machines
reboot mid-build, disks fill. The job table is the truth, so upkeep only has to
find rows that nobody is working on and settle them:

    sweep       every [upkeep] sweep_interval s: lost workers, expired queue, re-dispatch
    retention   daily at [upkeep] retention_at (local time): old builds, unused caches
    disk        every 30 s: free space under [upkeep] disk_warn_mb is a warning

``reconcile()`` runs once in every process at start (a Huey start-up hook, and
``start()``): builds of dead workers on this host end ``lost`` at once, and
queued builds are woken. The scheduler itself runs in exactly one process
(``lightci scheduler`` or ``lightci serve``).

Adding a scheduled job is one function and one line::

    @upkeep.every(2)                       # seconds, or a setting: "upkeep.sweep_interval"
    def check_health() -> None: ...

    @upkeep.daily("04:30")                 # local time, or a setting: "upkeep.retention_at"
    def rotate() -> None: ...
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightci import UserError, workspace
from lightci.config import Settings, hostname, settings
from lightci.models import ACTIVE, FINAL, QUEUED, RUNNING, Build, Stage, db, write_lock

log = logging.getLogger(__name__)

# Builds this process leased before an exec (Huey's SIGHUP restart keeps the
# PID) are orphans too; anything it claims later started after this moment.
IMPORTED_AT = time.time()
DAY = 86400
WORKER_MARKS = (b"huey_consumer", b"lightci")


# -- the registry of scheduled jobs -------------------------------------------


@dataclass
class UpkeepJob:
    """A function and when it runs: every N seconds, or daily at HH:MM local time.

    ``every`` and ``at`` may name a setting ("upkeep.sweep_interval"), which is
    re-read while the scheduler runs, so a changed lightci.toml applies.
    """

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


JOBS: list[UpkeepJob] = []
_scheduler = None
_scheduler_lock = threading.Lock()


def every(seconds: float | str) -> Callable:
    """Run the decorated function every `seconds` (a number or a setting's name)."""
    return lambda func: _register(UpkeepJob(func, every=seconds))


def daily(at: str) -> Callable:
    """Run the decorated function daily at `at` ("HH:MM" local time, or a setting's name)."""
    return lambda func: _register(UpkeepJob(func, at=at))


def _register(job: UpkeepJob) -> Callable:
    JOBS[:] = [j for j in JOBS if j.id != job.id] + [job]
    with _scheduler_lock:
        if _scheduler is not None:
            _schedule(_scheduler, job, settings())
    return job.func


def _trigger(job: UpkeepJob, cfg: Settings):
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger
    from tzlocal import get_localzone

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


def _schedule(scheduler, job: UpkeepJob, cfg: Settings) -> None:
    trigger = _trigger(job, cfg)
    job.applied = job.when(cfg)
    scheduler.add_job(_runner(job), trigger, id=job.id, name=job.id, replace_existing=True)


def _runner(job: UpkeepJob) -> Callable[[], None]:
    def run() -> None:
        try:
            job.func()
        except Exception:
            log.exception("upkeep job %s failed", job.id)

    return run


def _refresh() -> None:
    """Reschedule the jobs whose setting changed in lightci.toml."""
    cfg = settings()
    with _scheduler_lock:
        if _scheduler is None:
            return
        for job in JOBS:
            try:
                if job.when(cfg) != job.applied:
                    log.info("rescheduling %s: %r -> %r", job.id, job.applied, job.when(cfg))
                    _schedule(_scheduler, job, cfg)
            except UserError:
                log.exception("keeping the old schedule")


def start():
    """Reconcile, then start the scheduler with every registered job; returns it."""
    global _scheduler
    from apscheduler.schedulers.background import BackgroundScheduler

    _load_plugins()
    reconcile_once()
    cfg = settings()
    with _scheduler_lock:
        if _scheduler is not None:
            return _scheduler
        scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        for job in JOBS:
            _schedule(scheduler, job, cfg)
        scheduler.add_job(_refresh, "interval", seconds=10, id="upkeep.refresh")
        scheduler.start()
        _scheduler = scheduler
    log.info("upkeep scheduler started: %s", ", ".join(j.id for j in JOBS))
    check_disk()
    return scheduler


def _load_plugins() -> None:
    """Modules that add their own scheduled jobs (deploy health checks)."""
    import importlib

    for name in ("lightci.deploy",):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                log.exception("cannot load %s", name)
        except Exception:
            log.exception("cannot load %s", name)


def run_forever() -> int:
    """`lightci scheduler`: start, then wait for SIGTERM or SIGINT and stop cleanly."""
    global _scheduler
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] %(levelname)s:%(name)s: %(message)s"
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    scheduler = start()
    while not done.wait(1):
        pass
    with _scheduler_lock:
        _scheduler = None
    scheduler.shutdown(wait=True)
    return 0


# -- liveness and the processes of a build ------------------------------------


def worker_alive(host: str, pid: int | None, home: Path | None = None) -> bool | None:
    """Same host: is PID a live lightci worker? Other hosts: None (only heartbeats tell).

    A worker is a process whose command line names huey_consumer or lightci, or
    one that has a file of this home open (its job table, its queue). A zombie
    has an empty command line; a reused PID belongs to some other program.
    """
    if host != hostname():
        return None
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if not cmdline:
        return False
    if any(mark in cmdline for mark in WORKER_MARKS):
        return True
    prefix = f"{home or settings().home}/"
    try:
        fds = list(os.scandir(f"/proc/{pid}/fd"))
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd.path).startswith(prefix):
                return True
        except OSError:
            continue
    return False


def build_processes(cfg: Settings, build: Build) -> dict[int, int]:
    """{pid: pgid} of this host's processes that run in the build's environment.

    A stage runs in its own session with LIGHTCI_WORKSPACE set, and so does
    everything it starts (unless it clears its environment), even what moved
    to another process group. The marker keeps a reused PGID safe from us.
    """
    marker = f"LIGHTCI_WORKSPACE={workspace.build_root(cfg, build.job, build.number)}/workspace"
    marker_bytes = marker.encode()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            if marker_bytes not in environ.split(b"\0"):
                continue
            found[int(entry.name)] = os.getpgid(int(entry.name))
        except OSError:
            continue
    return found


def kill_build(cfg: Settings, build: Build) -> int:
    """SIGKILL the build's process group and every process of its environment on this host."""
    if build.host != hostname():
        return 0
    procs = build_processes(cfg, build)
    if build.pgid and build.pgid in procs.values():
        _send(os.killpg, build.pgid)
    for pid in procs:
        _send(os.kill, pid)
    return len(procs)


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
        _wake()
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
        Build.update(status="lost", finished_at=time.time(), error=reason).where(
            Build.id == build_id
        ).execute()
        kill_build(cfg, build)
    return True


def expire_queued() -> list[int]:
    """Queued builds that waited longer than their queue_timeout end 'expired'."""
    now = time.time()
    ended = []
    late = Build.select().where(Build.status == QUEUED, Build.queued_at + Build.queue_timeout < now)
    for build in late:
        reason = f"waited longer than queue_timeout ({build.queue_timeout} s)"
        updated = (
            Build.update(status="expired", finished_at=now, error=reason)
            .where(Build.id == build.id, Build.status == QUEUED)
            .execute()
        )
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
    from lightci import tasks

    if runnable_waiting() and tasks.pending() == 0:
        _wake()
        return True
    return False


def clear_leftovers(cfg: Settings) -> None:
    """Leases and wake-up pipes that outlived their build or process.

    An ended build's process group id may be reused by the system: clear it, so
    nothing ever signals a group that is no longer the build's.
    """
    ended = Build.select(Build.id).where(Build.status.in_(FINAL), Build.pgid.is_null(False))
    if ended.exists():  # a read first: no write lock every sweep
        Build.update(pgid=None).where(Build.id.in_(ended)).execute()
    wake_dir = cfg.run_dir / "wake"
    try:
        names = os.listdir(wake_dir)
    except FileNotFoundError:
        return
    for name in names:
        owner, _, pid = name.removesuffix(".fifo").rpartition("-")
        if name.endswith(".fifo") and pid.isdigit() and owner == hostname():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                (wake_dir / name).unlink(missing_ok=True)
            except PermissionError:
                pass


@every("upkeep.sweep_interval")
def sweep() -> dict[str, Any]:
    """One pass over the job table: what was lost, expired, woken."""
    cfg = settings()
    lost = end_orphans()
    expired = expire_queued()
    woken = redispatch()
    clear_leftovers(cfg)
    return {"lost": lost, "expired": expired, "woken": woken}


_reconciled = threading.Lock()
_reconcile_done = False


def reconcile() -> dict[str, Any]:
    """At start: builds of dead workers on this host end lost now, queued builds are woken."""
    lost = end_orphans()
    expired = expire_queued()
    queued = Build.select().where(Build.status == QUEUED).exists()
    if queued and not lost:
        _wake()
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


def _wake() -> None:
    from lightci.tasks import wake

    wake()


# -- force-unlock: the escape hatch ----------------------------------------------


def force_unlock(build_id: int | str | None = None, all: bool = False) -> list[Build]:
    """End stuck active builds as lost and kill their processes; returns the ended builds."""
    cfg = settings()
    if all:
        targets = list(Build.select().where(Build.status.in_(ACTIVE)).order_by(Build.id))
    elif build_id is not None:
        from lightci import builds

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
        _wake()
    return ended


# -- retention ---------------------------------------------------------------


def _days(days: Any) -> float:
    if isinstance(days, bool) or days is None:
        raise UserError(f"days must be a number of days (0 or more), got {days!r}")
    try:
        value = float(days)
    except (TypeError, ValueError):
        raise UserError(f"days must be a number of days (0 or more), got {days!r}") from None
    if not value >= 0 or value == float("inf"):
        raise UserError(f"days must be a number of days (0 or more), got {days!r}")
    return value


def _age_of(build: Build) -> float:
    return build.finished_at or build.started_at or build.queued_at


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def cleanup(days: Any = None, dry_run: bool = False) -> dict[str, Any]:
    """Remove builds older than `days` (default retention_days) and unused key caches.

    The newest keep_last builds of every job and every build that is not final
    stay. Returns what went (or, with dry_run, what would go) and its size.
    """
    if not isinstance(dry_run, bool):
        raise UserError(f"dry_run must be true or false, got {dry_run!r}")
    cfg = settings()
    days = _days(cfg["builds"]["retention_days"] if days is None else days)
    keep_last = cfg["builds"]["keep_last"]
    cutoff = time.time() - days * DAY
    doomed = _old_builds(cutoff, keep_last)
    result: dict[str, Any] = {
        "dry_run": dry_run,
        "days": days,
        "keep_last": keep_last,
        "builds": [],
        "dirs": [],
        "caches": [],
        "bytes": 0,
    }
    for build in doomed:
        root = workspace.build_root(cfg, build.job, build.number)
        size = workspace.size(root) if root.exists() else 0
        result["builds"].append(
            {
                "id": build.id,
                "job": build.job,
                "number": build.number,
                "status": build.status,
                "bytes": size,
            }
        )
        result["bytes"] += size
    for path in _rowless_dirs(cfg, cutoff, {(b.job, b.number) for b in doomed}):
        size = workspace.size(path)
        result["dirs"].append({"path": str(path), "bytes": size})
        result["bytes"] += size
    for path, last_used in _unused_caches(cfg, cutoff):
        size = workspace.size(path)
        result["caches"].append(
            {
                "path": str(path),
                "bytes": size,
                "unused_days": round((time.time() - last_used) / DAY, 1),
            }
        )
        result["bytes"] += size
    if not dry_run:
        removed = _delete_rows(doomed)
        result["builds"] = [b for b in result["builds"] if b["id"] in removed]
        for build in doomed:
            if build.id in removed:
                _remove(workspace.build_root(cfg, build.job, build.number))
        for entry in result["dirs"] + result["caches"]:
            _remove(Path(entry["path"]))
        _remove_empty_job_dirs(cfg)
        result["bytes"] = sum(
            e["bytes"] for e in result["builds"] + result["dirs"] + result["caches"]
        )
        log.info(
            "cleanup: %d builds, %d dirs, %d caches, %d bytes",
            len(result["builds"]),
            len(result["dirs"]),
            len(result["caches"]),
            result["bytes"],
        )
    return result


def _remove(path: Path) -> None:
    """Remove a tree; what cannot go now (a file another user owns) is left for next time."""
    try:
        workspace.remove(path)
    except OSError as exc:
        log.warning("cleanup could not remove %s: %s", path, exc)


def _old_builds(cutoff: float, keep_last: int) -> list[Build]:
    doomed, seen = [], {}
    for build in Build.select().order_by(Build.job, Build.id.desc()):
        seen[build.job] = seen.get(build.job, 0) + 1
        if seen[build.job] <= keep_last or build.status not in FINAL:
            continue
        if _age_of(build) < cutoff:
            doomed.append(build)
    return doomed


def _delete_rows(doomed: list[Build]) -> set[int]:
    """Delete the rows; a build something else still points at (a live deployment) stays."""
    from peewee import IntegrityError

    removed = set()
    for build in doomed:
        try:
            with db.atomic():
                Stage.delete().where(Stage.build == build.id).execute()
                if Build.delete().where(Build.id == build.id, Build.status.in_(FINAL)).execute():
                    removed.add(build.id)
        except IntegrityError:
            log.info("keeping build %s: still referenced", build.id)
    return removed


def _rowless_dirs(cfg: Settings, cutoff: float, doomed: set[tuple[str, int]]) -> list[Path]:
    """Old build dirs whose row is gone (a crash between removing the row and the dir)."""
    if not cfg.builds_dir.is_dir():
        return []
    known = {(job, number) for job, number in Build.select(Build.job, Build.number).tuples()}
    found = []
    for job_dir in sorted(cfg.builds_dir.iterdir()):
        if not job_dir.is_dir():
            continue
        for path in sorted(job_dir.iterdir()):
            if not path.name.isdigit():
                continue
            ident = (job_dir.name, int(path.name))
            if ident in known or ident in doomed:
                continue
            if _mtime(path) < cutoff:
                found.append(path)
    return found


def _unused_caches(cfg: Settings, cutoff: float) -> list[tuple[Path, float]]:
    """Key and job caches no build used since the cutoff, and none uses now."""
    if not cfg.caches_dir.is_dir():
        return []
    last_used: dict[tuple[str, str], float] = {}
    in_use: set[tuple[str, str]] = set()
    rows = Build.select(Build.job, Build.key, Build.status, Build.started_at, Build.queued_at)
    for b in rows:
        when = b.started_at or b.queued_at
        for name in (workspace.key_dirname(b.key), "_job"):
            ident = (b.job, name)
            last_used[ident] = max(last_used.get(ident, 0.0), when)
            if b.status in ACTIVE or b.status == QUEUED:
                in_use.add(ident)
    found = []
    for job_dir in sorted(cfg.caches_dir.iterdir()):
        if not job_dir.is_dir():
            continue
        for path in sorted(job_dir.iterdir()):
            ident = (job_dir.name, path.name)
            if ident in in_use or not path.is_dir():
                continue
            used = max(last_used.get(ident, 0.0), _mtime(path))
            if used < cutoff:
                found.append((path, used))
    return found


def _remove_empty_job_dirs(cfg: Settings) -> None:
    for parent in (cfg.builds_dir, cfg.caches_dir):
        if not parent.is_dir():
            continue
        for job_dir in parent.iterdir():
            try:
                job_dir.rmdir()  # only when empty
            except OSError:
                pass


@daily("upkeep.retention_at")
def retention() -> dict[str, Any]:
    return cleanup()


# -- disk -----------------------------------------------------------------------


def disk(cfg: Settings | None = None) -> dict[str, Any]:
    """Free space where the home lives, and whether it is under [upkeep] disk_warn_mb."""
    cfg = cfg or settings()
    usage = shutil.disk_usage(cfg.home)
    warn = cfg["upkeep"]["disk_warn_mb"] * 1024 * 1024
    return {
        "path": str(cfg.home),
        "total_bytes": usage.total,
        "free_bytes": usage.free,
        "warn_bytes": warn,
        "low": usage.free < warn,
        "warning": (
            f"low disk: {usage.free // 2**20} MB free under {cfg.home} "
            f"(warning below {warn // 2**20} MB; see `lightci cleanup`)"
            if usage.free < warn
            else ""
        ),
    }


_disk_was_low = False


@every(30)
def check_disk() -> dict[str, Any]:
    """Log when free space falls under the threshold (once), and when it recovers."""
    global _disk_was_low
    state = disk()
    if state["low"] and not _disk_was_low:
        log.warning(state["warning"])
    elif _disk_was_low and not state["low"]:
        log.info("disk space recovered: %d MB free", state["free_bytes"] // 2**20)
    _disk_was_low = state["low"]
    return state


def metrics() -> str:
    """Prometheus lines for /metrics: disk space."""
    state = disk()
    return (
        "# HELP lightci_disk_free_bytes Free bytes on the filesystem of the lightci home.\n"
        "# TYPE lightci_disk_free_bytes gauge\n"
        f"lightci_disk_free_bytes {state['free_bytes']}\n"
        "# HELP lightci_disk_low 1 when free space is under [upkeep] disk_warn_mb.\n"
        "# TYPE lightci_disk_low gauge\n"
        f"lightci_disk_low {int(state['low'])}\n"
    )


# -- monitor --------------------------------------------------------------------


def monitor(build_id: int | str | None = None) -> dict[str, Any]:
    """Sizes and ages of build dirs and caches, free disk, and what needs a look."""
    cfg = settings()
    now = time.time()
    if build_id is not None:
        return _monitor_build(cfg, build_id, now)
    jobs: dict[str, dict[str, Any]] = {}
    if cfg.builds_dir.is_dir():
        for job_dir in sorted(p for p in cfg.builds_dir.iterdir() if p.is_dir()):
            dirs = [p for p in job_dir.iterdir() if p.name.isdigit()]
            oldest = min((_mtime(p) for p in dirs), default=now)
            jobs[job_dir.name] = {
                "job": job_dir.name,
                "builds": len(dirs),
                "bytes": workspace.size(job_dir),
                "oldest_days": round((now - oldest) / DAY, 1),
            }
    caches = []
    if cfg.caches_dir.is_dir():
        for job_dir in sorted(p for p in cfg.caches_dir.iterdir() if p.is_dir()):
            for path in sorted(p for p in job_dir.iterdir() if p.is_dir()):
                caches.append(
                    {
                        "job": job_dir.name,
                        "cache": path.name,
                        "path": str(path),
                        "bytes": workspace.size(path),
                        "age_days": round((now - _mtime(path)) / DAY, 1),
                    }
                )
    mirrors = workspace.size(cfg.mirrors_dir) if cfg.mirrors_dir.is_dir() else 0
    state = disk(cfg)
    return {
        "home": str(cfg.home),
        "disk": state,
        "jobs": list(jobs.values()),
        "builds_bytes": sum(j["bytes"] for j in jobs.values()),
        "caches": caches,
        "caches_bytes": sum(c["bytes"] for c in caches),
        "mirrors_bytes": mirrors,
        "warnings": warnings(cfg, now, state),
    }


def warnings(cfg: Settings, now: float, state: dict[str, Any]) -> list[str]:
    found = [state["warning"]] if state["low"] else []
    orphan_after = cfg["builds"]["orphan_after"]
    for b in Build.select().where(Build.status == RUNNING):
        beat = b.heartbeat_at or b.started_at or now
        if now - beat > orphan_after:
            found.append(
                f"build {b.id} ({b.label()}): no heartbeat from worker {b.worker} for "
                f"{int(now - beat)} s; is `lightci scheduler` running? "
                f"(`lightci force-unlock {b.id}` ends it)"
            )
    late = Build.select().where(Build.status == QUEUED, Build.queued_at + Build.queue_timeout < now)
    count = late.count()
    if count:
        found.append(
            f"{count} queued build(s) past their queue_timeout: "
            "is `lightci scheduler` (or `lightci serve`) running?"
        )
    return found


def _monitor_build(cfg: Settings, build_id: int | str, now: float) -> dict[str, Any]:
    from lightci import builds, jobs

    build = builds.get(build_id)
    root = workspace.build_root(cfg, build.job, build.number)
    log_file = root / "log.txt"
    info: dict[str, Any] = {
        "id": build.id,
        "build": build.label(),
        "status": build.status,
        "path": str(root),
        "exists": root.exists(),
        "bytes": workspace.size(root) if root.exists() else 0,
        "log_bytes": log_file.stat().st_size if log_file.exists() else 0,
        "age_days": round((now - build.queued_at) / DAY, 2),
        "cache": None,
        "disk": disk(cfg),
    }
    info["warnings"] = [info["disk"]["warning"]] if info["disk"]["low"] else []
    try:
        job = jobs.load(cfg, build.job)
    except UserError:
        job = None
    if job is not None and job.cache != "build":
        cache = workspace.dirs_for(cfg, job, build).cache
        info["cache"] = {
            "path": str(cache),
            "bytes": workspace.size(cache) if cache.exists() else 0,
        }
    return info
