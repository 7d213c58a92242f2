"""The scheduler's part of a deploy: health checks, the switch, monitoring, settling.

A deploy is a row-driven state machine, so no worker waits on a health check.
``check_due()`` runs every second while anything deploys and advances the rows that are due:

    checking  one health check: healthy -> switch; else retry later or fail
    live      the periodic health check ([deploy] monitor_interval)
    draining  the replaced container, stopped once in-flight requests finished

The switch is one transaction: the new row becomes "live" (the route every web
process reads), the old one "draining". A failed check removes the new
container and leaves the old one serving. Builds keep their key and slot while
deploying; the checks touch their heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from lightci import claims, jobs, probe, routes, workspace
from lightci.claims import release
from lightci.config import Settings, settings
from lightci.container import (
    NETWORK,
    client,
    container_name,
    docker_error,
    engine_error,
    engine_failures,
)
from lightci.errors import UserError
from lightci.logs import BuildLog, Masker
from lightci.models import (
    CANCELLED,
    CHECKING,
    DEPLOYING,
    DRAINING,
    FAILED,
    LIVE,
    LOST,
    RETIRED,
    SUCCESS,
    TIMEOUT,
    WITH_CONTAINER,
    Build,
    Deployment,
    run_sql,
    sql_list,
    write_lock,
)

log = logging.getLogger(__name__)

LEASE = 60  # seconds a deployment step holds its row against a second scheduler
LOG_LINES = 20  # of a failed container's log, in the build's error
UNHEALTHY_AFTER = 3  # failed periodic checks in a row before a live deployment is unhealthy
STARTING = 300  # seconds a new container may take to start before its row counts as lost
TICK = 1.0  # seconds between check_due runs while a build deploys (lightci.scheduler)
LONGEST = 5.0  # seconds between looks while nothing deploys (a deploy of another process)
# Set when this process started a container to check: the scheduler here looks at once.
deploying = threading.Event()


def check_due() -> float | None:
    """Advance what is due; returns when to look again: in TICK s while a build deploys,
    else at the next step due (a live app's next check), or None when nothing is
    deployed and no build is queued or running (then the scheduler's longest wait, or
    at once after deploy.launch); with builds about, in LONGEST s: one may deploy.

    While a deploy has a step due within the tick, it is followed closely until
    the tick ends, so a deploy switches as soon as it is healthy while an idle
    server runs no timer finer than a second.
    """
    started = time.time()
    if not run_sql(_ANYTHING_TO_DO).fetchone():  # an idle server: one or two indexed looks
        return None if claims.at_rest() else started + LONGEST  # a running build may deploy
    _advance_due(started)
    _settle_stranded(started)
    while True:
        upcoming = _next_due()
        if upcoming is None or upcoming >= started + TICK:
            if upcoming is None or run_sql(_DEPLOYING).fetchone():
                return started + TICK  # a deploy under way adds its row at any moment
            return upcoming
        time.sleep(max(0.0, upcoming - time.time()))
        _advance_due(time.time())


_DEPLOYING = f"SELECT 1 FROM build WHERE status = '{DEPLOYING}' LIMIT 1"
_ANYTHING_TO_DO = (
    f"SELECT 1 FROM deployment WHERE state IN {sql_list(WITH_CONTAINER)} "
    f"UNION ALL SELECT 1 FROM build WHERE status = '{DEPLOYING}' LIMIT 1"
)


def due() -> bool:
    """The resting checks' look (lightci.schedule): a deployment, or builds about."""
    return bool(run_sql(_ANYTHING_TO_DO).fetchone()) or not claims.at_rest()


def _next_due() -> float | None:
    row = (
        Deployment.select(Deployment.next_check_at)
        .where(Deployment.state.in_(WITH_CONTAINER), Deployment.next_check_at.is_null(False))
        .order_by(Deployment.next_check_at)
        .first()
    )
    return row.next_check_at if row is not None else None


def _advance_due(now: float) -> int:
    due = list(
        Deployment.select()
        .where(Deployment.state.in_(WITH_CONTAINER), Deployment.next_check_at <= now)
        .order_by(Deployment.next_check_at)
    )
    moved = 0
    for deployment in due:
        if not take(deployment, now):
            continue
        try:
            advance(deployment)
            moved += 1
        except Exception:  # one broken step must not stop the others' checks
            log.exception("deployment %s of %s: step failed", deployment.id, deployment.job)
            Deployment.update(next_check_at=time.time() + 5).where(
                Deployment.id == deployment.id
            ).execute()
    return moved


def take(deployment: Deployment, now: float) -> bool:
    """Hold the row for this step, so a second checker (a CLI rollback) skips it."""
    taken = (
        Deployment.update(next_check_at=now + LEASE)
        .where(
            Deployment.id == deployment.id,
            Deployment.state == deployment.state,
            Deployment.next_check_at == deployment.next_check_at,
        )
        .execute()
    )
    return taken == 1


def advance(deployment: Deployment) -> None:
    if deployment.state == CHECKING:
        _check_new(deployment)
    elif deployment.state == DRAINING:
        retire(deployment)
    elif deployment.state == LIVE:
        _monitor(deployment)


def _check_new(deployment: Deployment) -> None:
    cfg = settings()
    build = Build.get_or_none(Build.id == deployment.build_id) if deployment.build_id else None
    try:
        job = jobs.load(cfg, deployment.job)
    except UserError as exc:
        _fail(deployment, f"deploy aborted: {exc}", FAILED)
        return
    if not job.deploy:
        _fail(deployment, "deploy aborted: the job has no [deploy] any more", FAILED)
        return
    if build is not None:
        Build.update(heartbeat_at=time.time()).where(Build.id == build.id).execute()
        if build.is_final:  # force-unlocked, or ended by hand meanwhile
            _fail(deployment, f"deploy aborted: build {build.label()} ended {build.status}", None)
            return
        if build.cancel_requested:
            _fail(deployment, build.cancel_requested, CANCELLED)
            return
        if build.started_at and time.time() > build.started_at + build.timeout:
            _fail(deployment, f"timeout after {build.timeout} s", TIMEOUT)
            return
    tries = deployment.tries + 1
    error = probe.health_check(deployment, job.deploy)
    if error is None:
        switch(deployment, job)
        return
    retries = job.deploy["health_retries"]
    _build_note(cfg, deployment, f"health check {tries}/{retries} of {deployment.image}: {error}")
    if tries >= retries or error.startswith("container "):
        _fail(deployment, f"health check failed after {_tries(tries)}: {error}", FAILED)
        return
    Deployment.update(
        tries=tries,
        last_error=error,
        next_check_at=time.time() + job.deploy["health_interval"],
    ).where(Deployment.id == deployment.id).execute()


def _tries(n: int) -> str:
    return f"{n} try" if n == 1 else f"{n} tries"


def switch(deployment: Deployment, job: jobs.Job) -> None:
    """Move the route to the new container; the old one drains, then stops."""
    cfg = settings()
    now = time.time()
    deploy = job.deploy
    with write_lock():
        old = list(
            Deployment.select().where(
                Deployment.job == deployment.job,
                Deployment.state == LIVE,
                Deployment.id != deployment.id,
            )
        )
        Deployment.update(state=DRAINING, next_check_at=now + deploy["drain"]).where(
            Deployment.id.in_([d.id for d in old])
        ).execute()
        monitor = deploy["monitor_interval"]
        Deployment.update(
            state=LIVE,
            switched_at=now,
            health="ok",
            tries=0,
            last_error="",
            next_check_at=now + monitor if monitor else None,
        ).where(Deployment.id == deployment.id).execute()
        if deployment.build_id:
            release(deployment.build_id, SUCCESS, exit_code=0, stage="deploy")
    routes.forget(deployment.job)
    routes.write_upstream(cfg, deployment.job, deployment.address, deployment)
    was = f", {old[0].slot} drains for {deploy['drain']} s" if old else ""
    _build_note(
        cfg,
        deployment,
        f"healthy after {_tries(deployment.tries + 1)}: /apps/{deployment.job}/ now serves "
        f"{deployment.image} in {deployment.slot}{was}",
        final=SUCCESS,
    )


def _fail(deployment: Deployment, reason: str, status: str | None) -> None:
    """Remove the new container, keep the old one serving, end the build (as status) with why."""
    cfg = settings()
    lines = _last_log_lines(deployment.container)
    remove_container(deployment.container)
    error = reason
    if lines:
        error += f"\nlast log lines of {container_name(deployment.job, deployment.slot)}:\n{lines}"
    Deployment.update(state=FAILED, finished_at=time.time(), error=error, next_check_at=None).where(
        Deployment.id == deployment.id
    ).execute()
    if deployment.build_id and status:
        release(deployment.build_id, status, error=error, stage="deploy")
    _build_note(cfg, deployment, error, final=status or "")


def retire(deployment: Deployment) -> None:
    """Stop a replaced container once it drained."""
    remove_container(deployment.container, stop=True)
    Deployment.update(state=RETIRED, finished_at=time.time(), next_check_at=None).where(
        Deployment.id == deployment.id, Deployment.state == DRAINING
    ).execute()


def _monitor(deployment: Deployment) -> None:
    """The periodic check of a live container; unhealthy after a few failures in a row."""
    try:
        deploy = jobs.load(settings(), deployment.job).deploy
    except UserError:
        return  # a broken or deleted job.toml: undeploy_removed() decides
    if not deploy:
        return
    error = probe.health_check(deployment, deploy)
    fields: dict[str, Any] = {"next_check_at": time.time() + (deploy["monitor_interval"] or 30)}
    if error is None:
        fields.update(health="ok", tries=0, last_error="")
    else:
        tries = deployment.tries + 1
        fields.update(tries=tries, last_error=error)
        if tries >= UNHEALTHY_AFTER:
            fields["health"] = "unhealthy"
            if deployment.health != "unhealthy":
                log.warning("%s is unhealthy: %s", deployment.job, error)
            if deploy["restart_unhealthy"]:
                _restart(deployment)
                fields["tries"] = 0  # the restarted app gets as many checks again
    Deployment.update(**fields).where(
        Deployment.id == deployment.id, Deployment.state == LIVE
    ).execute()


def _restart(deployment: Deployment) -> None:
    """Restart the live container; the route follows if its address changed."""
    try:
        container = client().containers.get(deployment.container)
        container.restart(timeout=10)
        container.reload()
    except engine_failures() as exc:
        log.warning("could not restart %s: %s", deployment.container, engine_error(exc))
        return
    log.warning("restarted %s", container_name(deployment.job, deployment.slot))
    ip = container.attrs["NetworkSettings"]["Networks"].get(NETWORK, {}).get("IPAddress")
    address = f"{ip}:{deployment.address.rpartition(':')[2]}"
    if ip and address != deployment.address:
        Deployment.update(address=address).where(Deployment.id == deployment.id).execute()
        routes.forget(deployment.job)
        deployment.address = address
        routes.write_upstream(settings(), deployment.job, address, deployment)


def _settle_stranded(now: float) -> None:
    """A build left 'deploying' with nothing to check: its worker died mid-deploy."""
    orphan_after = settings()["builds"]["orphan_after"]
    unstarted = (
        Deployment.state == CHECKING,
        Deployment.next_check_at.is_null(),
        Deployment.created_at < now - STARTING,
    )
    if Deployment.select().where(*unstarted).exists():  # a read first: no write lock every tick
        Deployment.update(state=FAILED, finished_at=now, error="its worker died starting it").where(
            *unstarted
        ).execute()
    checked = Deployment.select(Deployment.build_id).where(
        Deployment.state == CHECKING, Deployment.build_id.is_null(False)
    )
    stranded = Build.select().where(
        Build.status == DEPLOYING,
        Build.heartbeat_at < now - orphan_after,
        Build.id.not_in(checked),
    )
    for build in list(stranded):  # read first: a write inside an open SELECT may fail
        release(build.id, LOST, error=f"deploy interrupted: worker {build.worker} stopped")


# -- rollback, undeploy, pruning ----------------------------------------------


def remove_container(container_id: str, stop: bool = False) -> None:
    try:
        container = client().containers.get(container_id)
        if stop:
            container.stop(timeout=10)
        container.remove(force=True)
    except docker_error("NotFound"):
        pass
    except engine_failures() as exc:
        log.warning("could not remove container %s: %s", container_id[:12], engine_error(exc))


def _last_log_lines(container_id: str) -> str:
    try:
        raw = client().containers.get(container_id).logs(tail=LOG_LINES)
    except engine_failures():
        return ""
    return raw.decode("utf-8", "replace").rstrip()


def _build_note(cfg: Settings, deployment: Deployment, message: str, final: str = "") -> None:
    """A line in the deploying build's log (the scheduler writes after the worker is done)."""
    if not deployment.build_id:
        return
    build = Build.get_or_none(Build.id == deployment.build_id)
    if build is None:
        return
    try:
        secrets = workspace.job_secrets(cfg, jobs.load(cfg, build.job))
    except UserError:
        secrets = {}
    try:
        with BuildLog(workspace.log_path(cfg, build), Masker(list(secrets.values()))) as out:
            for line in message.splitlines() or [""]:
                out.note(line)
            if final:
                out.note(f"finished: {final}")
    except OSError:
        log.warning("cannot write the log of build %s", build.id)


# -- the route ----------------------------------------------------------------


def wait(deployment_id: int, timeout: float = 3600) -> Deployment:
    """Drive one deployment to live or failed from this process (the CLI needs no scheduler)."""
    deadline = time.time() + timeout
    while True:
        deployment = Deployment.get_by_id(deployment_id)
        if deployment.state != CHECKING or time.time() > deadline:
            return deployment
        now = time.time()
        if deployment.next_check_at <= now and take(deployment, now):
            advance(deployment)
            continue
        time.sleep(min(0.2, max(0.0, deployment.next_check_at - now)))
