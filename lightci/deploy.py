"""Docker deploys: the image, the new container beside the live one, rollback, undeploy.

The worker's part (``start``): after the stages pass, build the image (build
state "deploying"), push it, start it in the idle slot of the job's blue/green
pair and write its Deployment row "checking". The scheduler's health checks
(lightci.healthchecks) take it from there and end the build.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lightci import healthchecks, jobs, registry, routes
from lightci.claims import release
from lightci.config import Settings, settings
from lightci.container import (
    HOME_LABEL,
    NETWORK,
    client,
    container_name,
    containers,
    docker_error,
    engine_error,
    engine_failures,
)
from lightci.errors import UserError
from lightci.logs import BuildLog
from lightci.models import (
    CANCELLED,
    CHECKING,
    DEPLOYING,
    DRAINING,
    FAILED,
    LIVE,
    RUNNING,
    STOPPED,
    WITH_CONTAINER,
    Build,
    Deployment,
    iso,
    run_sql,
    sql_list,
    write_lock,
)

log = logging.getLogger(__name__)

SLOTS = ("blue", "green")


def image_tag(job: jobs.Job, build: Build) -> str:
    """lightci/<job>:<commit[:12] or build-<id>>: never only 'latest'."""
    return (
        f"lightci/{job.name.lower()}:{build.commit[:12] if build.commit else f'build-{build.id}'}"
    )


def start(cfg: Settings, job: jobs.Job, build: Build, dirs, env, out: BuildLog, watched: Any):
    """After the stages passed: image, push, new container. Returns (status, fields).

    Returns (DEPLOYING, {}) once the health checks are the scheduler's; the
    runner then leaves the build active.
    """
    Build.update(status=DEPLOYING, stage="deploy").where(
        Build.id == build.id, Build.status == RUNNING
    ).execute()
    build = Build.get_by_id(build.id)  # the commit the checkout found
    tag = image_tag(job, build)
    try:
        image_id = build_image(job, dirs.workspace, tag, out, watched)
        if watched.kill_reason:
            return watched.kill_status, {"error": watched.kill_reason}
        if job.deploy["push"]:
            push_image(cfg, image_id, job.deploy["push"], tag.split(":", 1)[1], out, watched)
        if watched.kill_reason:  # stopped in the push
            return watched.kill_status, {"error": watched.kill_reason}
        deployment = launch(job, tag, image_id, f"build #{build.number} ({build.trigger})", build)
    except UserError as exc:
        return FAILED, {"error": str(exc), "stage": "deploy"}
    except engine_failures() as exc:
        return FAILED, {"error": f"deploy failed: {engine_error(exc)}", "stage": "deploy"}
    out.note(
        f"started {deployment.slot} container {container_name(job.name, deployment.slot)} "
        f"({deployment.address}); health checks of {job.deploy['health']} follow"
    )
    return DEPLOYING, {}


def build_image(job: jobs.Job, context: Path, tag: str, out: BuildLog, watched: Any) -> str:
    """docker build of the workspace's Dockerfile; returns the image id."""
    dockerfile = job.deploy["dockerfile"]
    if not (context / dockerfile).is_file():
        raise UserError(f"no {dockerfile} in the workspace ([deploy] dockerfile = {dockerfile!r})")
    out.note(f"==> image {tag} from {dockerfile}")
    started = time.time()
    labels = {"lightci.job": job.name}
    image_id = registry.build_image(
        context, dockerfile, tag, labels, out, watched, "image build failed"
    )
    if not image_id:
        return ""
    out.note(f"<== image {tag} ({image_id[7:19]}) in {time.time() - started:.2f} s")
    return image_id


def push_image(cfg: Settings, image_id: str, repository: str, tag: str, out, watched) -> None:
    client().api.tag(image_id, repository, tag)
    registry.push(cfg, repository, tag, out, watched)  # [registry]'s credentials, as [[images]]


def launch(
    job: jobs.Job, image: str, image_id: str, trigger: str, build: Build | None = None
) -> Deployment:
    """Start the image in the idle slot beside the live one; the row waits for its checks.

    The row is written first, in one transaction with the check for another
    deploy of the job, so two builds (of two keys) can never share a slot.
    It becomes due for checks once its container runs.
    """
    now = time.time()
    with write_lock():
        busy = (
            Deployment.select()
            .where(Deployment.job == job.name, Deployment.state == CHECKING)
            .first()
        )
        if busy is not None:
            raise UserError(
                f"job {job.name!r} is already deploying {busy.image} ({busy.trigger}); "
                "try again when it is live or failed",
                status=409,
            )
        live = routes.live_deployment(job.name)
        slot = SLOTS[1] if live is not None and live.slot == SLOTS[0] else SLOTS[0]
        deployment = Deployment.create(
            job=job.name,
            build_id=build.id if build else None,
            build_number=build.number if build else None,
            image=image,
            image_id=image_id,
            slot=slot,
            state=CHECKING,
            trigger=trigger,
            created_at=now,
        )
    try:
        container, address = _start(job, slot, image_id)
    except BaseException as exc:  # whatever stopped it: a row left "checking" blocks the job
        known = isinstance(exc, engine_failures())
        error = f"start failed: {engine_error(exc) if known else exc or type(exc).__name__}"
        Deployment.update(state=FAILED, finished_at=time.time(), error=error).where(
            Deployment.id == deployment.id
        ).execute()
        raise
    now = time.time()
    with write_lock():
        Deployment.update(
            container=container.id,
            address=address,
            next_check_at=now + min(job.deploy["health_interval"], 0.2),
        ).where(Deployment.id == deployment.id).execute()
        if build is not None:
            Build.update(heartbeat_at=now).where(Build.id == build.id).execute()
    healthchecks.deploying.set()  # a scheduler in this process checks it at once
    return Deployment.get_by_id(deployment.id)


def _start(job: jobs.Job, slot: str, image_id: str):
    """The container in `slot` on the lightci network; returns it and its host:port."""
    _free_slot(job.name, slot)
    network = _network()
    container = client().containers.run(
        image_id,
        name=container_name(job.name, slot),
        detach=True,
        network=network.name,
        environment=job.deploy["env"],
        labels={
            "lightci.job": job.name,
            "lightci.slot": slot,
            "lightci.role": "app",
            HOME_LABEL: str(settings().home),
        },
        init=True,  # an app as PID 1 may ignore SIGTERM; the init passes it on
    )
    container.reload()
    ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
    return container, f"{ip}:{job.deploy['port']}"


def _network():
    try:
        return client().networks.get(NETWORK)
    except docker_error("NotFound"):
        try:
            return client().networks.create(NETWORK, driver="bridge", labels={"lightci": "1"})
        except docker_error("DockerException"):  # another process made it just now
            return client().networks.get(NETWORK)


def _free_slot(job_name: str, slot: str) -> None:
    """The idle slot may still hold a draining container (a quick redeploy) or a leftover.

    The scheduler retires a draining container when its drain ends; this waits
    for that, and retires it here when no scheduler does.
    """
    deadline = time.time() + 60
    while True:
        draining = (
            Deployment.select()
            .where(
                Deployment.job == job_name, Deployment.slot == slot, Deployment.state == DRAINING
            )
            .first()
        )
        if draining is None:
            break
        now = time.time()
        if (draining.next_check_at or 0) < now - 2 or now > deadline:
            if healthchecks.take(draining, now):
                healthchecks.retire(draining)
            continue
        time.sleep(0.1)
    name = container_name(job_name, slot)
    while True:
        try:
            client().containers.get(name).remove(force=True)
        except docker_error("NotFound"):
            return
        except docker_error("DockerException"):  # its removal is in progress already
            if time.time() > deadline:
                raise
            time.sleep(0.1)


# -- the scheduler's part -----------------------------------------------------


def rollback(job_name: str, trigger: str = "cli") -> Deployment:
    """Start the image that was live before the current one, through the same checks."""
    cfg = settings()
    job = jobs.load(cfg, job_name)
    if not job.deploy:
        raise UserError(f"job {job_name!r} has no [deploy] nor [gitops]: nothing to roll back")
    live = routes.live_deployment(job_name)
    if live is None:
        raise UserError(f"job {job_name!r} has no live deployment to roll back", status=409)
    earlier = (
        Deployment.select()
        .where(
            Deployment.job == job_name,
            Deployment.switched_at.is_null(False),
            Deployment.switched_at < live.switched_at,
            Deployment.image_id != live.image_id,
        )
        .order_by(Deployment.switched_at.desc())
    )
    for candidate in list(earlier):  # read first: launch() writes, and an open SELECT may lock
        try:
            client().images.get(candidate.image_id)
        except docker_error("ImageNotFound"):
            continue
        return launch(job, candidate.image, candidate.image_id, f"rollback ({trigger})")
    raise UserError(f"job {job_name!r} has no earlier image to roll back to", status=409)


def undeploy(job_name: str) -> int:
    """Stop the job's containers, free its route; returns how many containers stopped."""
    jobs.check_name(job_name)
    cfg = settings()
    now = time.time()
    stopped = 0
    running = Deployment.select().where(
        Deployment.job == job_name, Deployment.state.in_(WITH_CONTAINER)
    )
    for deployment in list(running):  # read first: a write inside an open SELECT may fail
        healthchecks.remove_container(deployment.container, stop=True)
        Deployment.update(state=STOPPED, finished_at=now, next_check_at=None).where(
            Deployment.id == deployment.id
        ).execute()
        if deployment.build_id and deployment.state == CHECKING:
            release(deployment.build_id, CANCELLED, error="undeployed", stage="deploy")
        stopped += 1
    for container in containers(
        f"lightci.job={job_name}", "lightci.role=app", f"{HOME_LABEL}={cfg.home}"
    ):
        try:
            container.remove(force=True)
        except docker_error("NotFound"):
            pass
    routes.forget(job_name)
    for path in routes.upstream_files(cfg, job_name):
        path.unlink(missing_ok=True)
    return stopped


_DEPLOYED_JOBS = (
    f"SELECT DISTINCT job FROM deployment WHERE state IN {sql_list(WITH_CONTAINER)} ORDER BY job"
)


def undeploy_removed() -> list[str]:
    """Jobs whose [deploy] (or whole directory) was deleted lose their containers and route.

    A job.toml that does not load is left alone: a typo must not take an app down.
    """
    cfg = settings()
    gone = []
    for (job_name,) in run_sql(_DEPLOYED_JOBS).fetchall():  # plain SQL: it runs every minute
        if (cfg.jobs_dir / job_name).is_dir():
            try:
                if jobs.load(cfg, job_name).deploy:
                    continue
            except UserError:
                continue
        log.info("job %s has no [deploy] any more: undeploying", job_name)
        undeploy(job_name)
        gone.append(job_name)
    return gone


def prune_images() -> list[str]:
    """Keep the last [deploy] keep_images images of each job (and any in use); remove older."""
    cfg = settings()
    removed = []
    names = {d.job for d in Deployment.select(Deployment.job).distinct()}
    for job_name in sorted(names):
        try:
            keep_last = jobs.load(cfg, job_name).deploy.get("keep_images", 5)
        except UserError:
            keep_last = 5
        keep: set[str] = set()
        for d in (
            Deployment.select()
            .where(Deployment.job == job_name)
            .order_by(Deployment.created_at.desc())
        ):
            if d.state in WITH_CONTAINER or (d.image_id not in keep and len(keep) < keep_last):
                keep.add(d.image_id)
        for image in client().images.list(name=f"lightci/{job_name.lower()}"):
            if image.id in keep:
                continue
            for tag in image.tags:
                try:
                    client().images.remove(tag, noprune=False)
                    removed.append(tag)
                except docker_error("DockerException") as exc:
                    log.info("keeping %s: %s", tag, engine_error(exc))
    return removed


def listing(job_name: str | None = None, limit: int = 50) -> list[Deployment]:
    query = Deployment.select().order_by(Deployment.id.desc()).limit(max(1, min(limit, 500)))
    if job_name:
        query = query.where(Deployment.job == job_name)
    return list(query)


def unhealthy() -> list[Deployment]:
    """Live containers whose periodic health check keeps failing (the dashboard warns)."""
    return list(
        Deployment.select()
        .where(Deployment.state == LIVE, Deployment.health == "unhealthy")
        .order_by(Deployment.job)
    )


def as_dict(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.id,
        "job": deployment.job,
        "build_id": deployment.build_id,
        "build_number": deployment.build_number,
        "image": deployment.image,
        "image_id": deployment.image_id,
        "slot": deployment.slot,
        "container": container_name(deployment.job, deployment.slot),
        "address": deployment.address,
        "state": deployment.state,
        "health": deployment.health,
        "tries": deployment.tries,
        "last_error": deployment.last_error,
        "trigger": deployment.trigger,
        "created_at": iso(deployment.created_at),
        "switched_at": iso(deployment.switched_at),
        "finished_at": iso(deployment.finished_at),
        "error": deployment.error,
    }
