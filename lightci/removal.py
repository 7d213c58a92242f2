"""Deleting a job, and everything it made: builds, logs, caches, mirrors, containers, route,
GitOps history, learned peaks and durations.

The job's directory goes first (renamed aside in one step), so no webhook or
trigger can queue a new build while the rest is removed. A running build
refuses the delete (409) unless the caller asked to cancel it; then its
worker's watchdog stops it and the delete waits for its final state.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from lightci import builds, container, deploy
from lightci.config import Settings, settings
from lightci.errors import UserError
from lightci.jobfiles import existing_dir
from lightci.models import ACTIVE, OPEN, Build, Bump, Deployment, Image, Stage, db, run_sql
from lightci.workspace import remove

log = logging.getLogger(__name__)

CANCEL_WAIT = 10  # seconds past kill_grace a cancelled build may take to end


def delete(name: str, cancel: bool = False) -> dict[str, Any]:
    """Remove job `name` and all it made; returns what went."""
    cfg = settings()
    job_dir = existing_dir(cfg, name)
    running = _running(name)
    if running and not cancel:
        labels = ", ".join(f"#{b.number}" for b in running)
        raise UserError(
            f"job {name!r} has a running build ({labels}): wait for it, or delete with "
            "?cancel=1 to cancel it first",
            409,
        )
    aside = job_dir.with_name(f".deleting-{name}-{secrets.token_hex(4)}")
    job_dir.rename(aside)
    try:
        for build in list(Build.select().where(Build.job == name, Build.status.in_(OPEN))):
            try:
                builds.cancel(build.id, reason=f"job {name} deleted")
            except UserError:  # it ended meanwhile
                pass
        _wait_final(cfg, name)
        containers = _remove_containers(cfg, name)
    except BaseException:
        aside.rename(job_dir)  # nothing is lost yet: the job stays as it was
        raise
    try:
        with db.atomic():
            ids = Build.select(Build.id).where(Build.job == name)
            Stage.delete().where(Stage.build.in_(ids)).execute()
            gone = Build.delete().where(Build.job == name).execute()
            Deployment.delete().where(Deployment.job == name).execute()
            # A job made again under the name must not roll back this one's release, nor
            # inherit its expected memory and durations.
            Bump.delete().where(Bump.job == name).execute()
            Image.delete().where(Image.job == name).execute()
            run_sql("DELETE FROM key_stat WHERE substr(key, 1, ?) = ?", len(name) + 1, f"{name}:")
        for path in (
            cfg.builds_dir / name,
            cfg.caches_dir / name,
            cfg.mirrors_dir / f"{name}.git",
            cfg.mirrors_dir / f"{name}.git.tmp",
            cfg.mirrors_dir / "gitops" / name,
        ):
            remove(path)
        (cfg.mirrors_dir / f"{name}.lock").unlink(missing_ok=True)
        (cfg.mirrors_dir / "gitops" / f"{name}.lock").unlink(missing_ok=True)
    finally:
        remove(aside)
    return {"deleted": name, "builds": gone, "containers": containers}


def _running(name: str) -> list[Build]:
    return list(Build.select().where(Build.job == name, Build.status.in_(ACTIVE)))


def _wait_final(cfg: Settings, name: str) -> None:
    """The cancelled builds' workers end them; a worker that is gone is the sweeper's (lost)."""
    deadline = time.time() + cfg["builds"]["kill_grace"] + CANCEL_WAIT
    while _running(name) and time.time() < deadline:
        time.sleep(0.1)
    left = _running(name)
    if left:
        log.warning("job %s deleted while builds %s still end", name, [b.id for b in left])


def _remove_containers(cfg: Settings, name: str) -> int:
    """Its live deployment and route, build containers, the images it deployed; Docker's part."""
    deployed = Deployment.select().where(Deployment.job == name)
    images = {d.image_id for d in deployed if d.image_id}
    has_deploys = bool(images) or deployed.exists()
    try:
        stopped = deploy.undeploy(name) if has_deploys else 0
        for leftover in container.containers(
            f"lightci.job={name}", f"{container.HOME_LABEL}={cfg.home}"
        ):
            leftover.remove(force=True)
            stopped += 1
        for image_id in images:  # only this home's: another home may share the engine
            try:
                container.client().images.remove(image_id, force=True)
            except Exception as exc:  # gone already, or another home's container uses it
                log.info("image %s of job %s stays: %s", image_id, name, exc)
    except UserError:
        raise
    except Exception as exc:  # no engine here: then it holds nothing of this job either
        if has_deploys:
            raise UserError(f"cannot remove job {name!r}'s containers: {exc}", 503) from None
        log.info("no Docker engine to clean for job %s: %s", name, exc)
    return stopped
