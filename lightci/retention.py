"""Retention and disk: old builds and unused caches go, free space is watched.

retention   daily at [upkeep] retention_at (local time): builds older than
            retention_days (the newest keep_last of each job stay), unused caches
disk        every 30 s: free space under [upkeep] disk_warn_mb is a warning
monitor     sizes and ages of build dirs and caches, for `lightci monitor`
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from peewee import IntegrityError

from lightci import builds, jobs, workspace
from lightci.config import Settings, settings
from lightci.errors import UserError
from lightci.models import ACTIVE, FINAL, QUEUED, RUNNING, Build, Delivery, Stage, db

log = logging.getLogger(__name__)

DAY = 86400


def _days(days: Any) -> float:
    """The one rule for `days` (CLI, API, settings): a number, 0 or more."""
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days < float("inf"):
        raise UserError(f"days must be a number of days (0 or more), got {days!r}")
    return float(days)


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
    """Final builds past the cutoff, but the newest keep_last final ones of each job: a
    queued or running build (which stays anyway) takes no place among those kept."""
    doomed, seen = [], {}
    for build in Build.select().order_by(Build.job, Build.id.desc()):
        if build.status not in FINAL:
            continue
        seen[build.job] = seen.get(build.job, 0) + 1
        if seen[build.job] <= keep_last:
            continue
        if _age_of(build) < cutoff:
            doomed.append(build)
    return doomed


def _delete_rows(doomed: list[Build]) -> set[int]:
    """Delete the rows; a build something else still points at (a live deployment) stays."""
    removed = set()
    for build in doomed:
        try:
            with db.atomic():
                Stage.delete().where(Stage.build == build.id).execute()
                Delivery.delete().where(Delivery.build == build.id).execute()
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


# -- monitor ---------------------------------------------------------------------


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
