"""Docker deploys: the image, the blue/green pair, health checks, the route, rollback.

A deploy is a row-driven state machine, so no worker waits on a health check:

    worker     stages pass -> build the image (build state "deploying") -> push
               -> start it in the idle slot -> Deployment row "checking" -> return
    scheduler  check_due() every half second advances the rows that are due:
               checking  one health check: healthy -> switch; else retry later or fail
               live      the periodic health check (monitor_interval)
               draining  the replaced container, stopped once in-flight requests finished

The switch is one transaction: the new row becomes "live" (the route every
web process reads), the old one "draining". A failed check removes the new
container and leaves the old one serving. Builds keep their key and slot
while deploying; the scheduler touches their heartbeat while it checks.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import requests
from docker.errors import DockerException, ImageNotFound, NotFound

from lightci import UserError, jobs, upkeep, workspace
from lightci.claims import release
from lightci.config import Settings, settings
from lightci.container import HOME_LABEL, client, containers, engine_error
from lightci.logs import BuildLog, Masker
from lightci.models import DEPLOYING, RUNNING, Build, Deployment, iso, write_lock

log = logging.getLogger(__name__)

NETWORK = "lightci"
SLOTS = ("blue", "green")
CHECKING, LIVE, DRAINING, RETIRED, FAILED, STOPPED = (
    "checking",
    "live",
    "draining",
    "retired",
    "failed",
    "stopped",
)
RUNNING_STATES = (CHECKING, LIVE, DRAINING)  # states with a container
LEASE = 60  # seconds a deployment step holds its row against a second scheduler
LOG_LINES = 20  # of a failed container's log, in the build's error
UNHEALTHY_AFTER = 3  # failed periodic checks in a row before a live deployment is unhealthy
ROUTE_TTL = 0.5  # seconds a web process may serve from its cached route
STARTING = 300  # seconds a new container may take to start before its row counts as lost


# -- names --------------------------------------------------------------------


def image_tag(job: jobs.Job, build: Build) -> str:
    """lightci/<job>:<commit[:12] or build-<id>>: never only 'latest'."""
    return (
        f"lightci/{job.name.lower()}:{build.commit[:12] if build.commit else f'build-{build.id}'}"
    )


def container_name(job_name: str, slot: str) -> str:
    return f"lightci-{job_name}-{slot}"


def upstream_files(cfg: Settings, job_name: str) -> tuple[Path, Path]:
    """HOME/run/upstreams/<job>.conf (nginx) and <job>.caddy (Caddy)."""
    base = cfg.run_dir / "upstreams"
    return base / f"{job_name}.conf", base / f"{job_name}.caddy"


# -- the worker's part --------------------------------------------------------


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
            push_image(image_id, job.deploy["push"], tag.split(":", 1)[1], out)
        deployment = launch(job, tag, image_id, f"build #{build.number} ({build.trigger})", build)
    except UserError as exc:
        return "failed", {"error": str(exc), "stage": "deploy"}
    except (DockerException, requests.RequestException) as exc:
        return "failed", {"error": f"deploy failed: {engine_error(exc)}", "stage": "deploy"}
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
    image_id = ""
    events = client().api.build(
        path=str(context),
        dockerfile=dockerfile,
        tag=tag,
        rm=True,
        forcerm=True,
        decode=True,
        labels={"lightci.job": job.name},
    )
    for event in events:
        if "error" in event:
            raise UserError(f"image build failed: {' '.join(event['error'].split())}")
        if "stream" in event:
            out.write(event["stream"])
        image_id = event.get("aux", {}).get("ID", image_id)
        if watched.kill_reason:
            events.close()  # the engine stops a build whose client went away
            return ""
    image_id = image_id or client().images.get(tag).id
    out.note(f"<== image {tag} ({image_id[7:19]}) in {time.time() - started:.2f} s")
    return image_id


def push_image(image_id: str, repository: str, tag: str, out: BuildLog) -> None:
    api = client().api
    api.tag(image_id, repository, tag)
    out.note(f"==> push {repository}:{tag}")
    for event in api.push(repository, tag=tag, stream=True, decode=True):
        if "error" in event:
            raise UserError(f"push to {repository} failed: {' '.join(event['error'].split())}")
        if event.get("status") and not event.get("progressDetail"):
            out.write(f"{event.get('id', '')} {event['status']}\n".lstrip())
    out.note(f"<== pushed {repository}:{tag}")


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
        live = live_deployment(job.name)
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
    except (DockerException, requests.RequestException) as exc:
        Deployment.update(
            state=FAILED, finished_at=time.time(), error=f"start failed: {engine_error(exc)}"
        ).where(Deployment.id == deployment.id).execute()
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
    except NotFound:
        try:
            return client().networks.create(NETWORK, driver="bridge", labels={"lightci": "1"})
        except DockerException:  # another process made it just now
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
            if _take(draining, now):
                _retire(draining)
            continue
        time.sleep(0.1)
    name = container_name(job_name, slot)
    while True:
        try:
            client().containers.get(name).remove(force=True)
        except NotFound:
            return
        except DockerException:  # its removal is in progress already
            if time.time() > deadline:
                raise
            time.sleep(0.1)


# -- the scheduler's part -----------------------------------------------------


@upkeep.every(0.5)
def check_due() -> int:
    """Advance every deployment whose next step is due; returns how many moved."""
    now = time.time()
    due = list(
        Deployment.select()
        .where(Deployment.state.in_(RUNNING_STATES), Deployment.next_check_at <= now)
        .order_by(Deployment.next_check_at)
    )
    moved = 0
    for deployment in due:
        if not _take(deployment, now):
            continue
        try:
            advance(deployment)
            moved += 1
        except Exception:
            log.exception("deployment %s of %s: step failed", deployment.id, deployment.job)
            Deployment.update(next_check_at=time.time() + 5).where(
                Deployment.id == deployment.id
            ).execute()
    _settle_stranded(now)
    return moved


def _take(deployment: Deployment, now: float) -> bool:
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
        _retire(deployment)
    elif deployment.state == LIVE:
        _monitor(deployment)


def _check_new(deployment: Deployment) -> None:
    cfg = settings()
    build = Build.get_or_none(Build.id == deployment.build_id) if deployment.build_id else None
    try:
        job = jobs.load(cfg, deployment.job)
    except UserError as exc:
        _fail(deployment, f"deploy aborted: {exc}", "failed")
        return
    if not job.deploy:
        _fail(deployment, "deploy aborted: the job has no [deploy] any more", "failed")
        return
    if build is not None:
        Build.update(heartbeat_at=time.time()).where(Build.id == build.id).execute()
        if build.is_final:  # force-unlocked, or ended by hand meanwhile
            _fail(deployment, f"deploy aborted: build {build.label()} ended {build.status}", None)
            return
        if build.cancel_requested:
            _fail(deployment, build.cancel_requested, "cancelled")
            return
        if build.started_at and time.time() > build.started_at + build.timeout:
            _fail(deployment, f"timeout after {build.timeout} s", "timeout")
            return
    tries = deployment.tries + 1
    error = health_check(deployment, job.deploy)
    if error is None:
        switch(deployment, job)
        return
    retries = job.deploy["health_retries"]
    _build_note(cfg, deployment, f"health check {tries}/{retries} of {deployment.image}: {error}")
    if tries >= retries or error.startswith("container "):
        _fail(deployment, f"health check failed after {_tries(tries)}: {error}", "failed")
        return
    Deployment.update(
        tries=tries,
        last_error=error,
        next_check_at=time.time() + job.deploy["health_interval"],
    ).where(Deployment.id == deployment.id).execute()


def health_check(deployment: Deployment, deploy: dict[str, Any]) -> str | None:
    """One GET of the health path; None when it answers 2xx, else what went wrong."""
    try:
        container = client().containers.get(deployment.container)
    except NotFound:
        return "container is gone"
    if container.status not in ("running", "created", "restarting"):
        return f"container exited with code {container.attrs['State'].get('ExitCode')}"
    host, _, port = deployment.address.rpartition(":")
    timeout = min(deploy["health_timeout"], max(deploy["health_interval"], 1))
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", deploy["health"], headers={"User-Agent": "lightci-health"})
        response = conn.getresponse()
        response.read()
        if 200 <= response.status < 300:
            return None
        return f"HTTP {response.status} {response.reason}".strip()
    except (OSError, http.client.HTTPException) as exc:
        return _describe(exc)
    finally:
        conn.close()


def _tries(n: int) -> str:
    return f"{n} try" if n == 1 else f"{n} tries"


def _describe(exc: Exception) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


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
            release(deployment.build_id, "success", exit_code=0, stage="deploy")
    _forget_route(deployment.job)
    write_upstream(cfg, deployment.job, deployment.address, deployment)
    was = f", {old[0].slot} drains for {deploy['drain']} s" if old else ""
    _build_note(
        cfg,
        deployment,
        f"healthy after {_tries(deployment.tries + 1)}: /apps/{deployment.job}/ now serves "
        f"{deployment.image} in {deployment.slot}{was}",
        final="success",
    )


def _fail(deployment: Deployment, reason: str, status: str | None) -> None:
    """Remove the new container, keep the old one serving, end the build (as status) with why."""
    cfg = settings()
    lines = _last_log_lines(deployment.container)
    _remove(deployment.container)
    error = reason
    if lines:
        error += f"\nlast log lines of {container_name(deployment.job, deployment.slot)}:\n{lines}"
    Deployment.update(state=FAILED, finished_at=time.time(), error=error, next_check_at=None).where(
        Deployment.id == deployment.id
    ).execute()
    if deployment.build_id and status:
        release(deployment.build_id, status, error=error, stage="deploy")
    _build_note(cfg, deployment, error, final=status or "")


def _retire(deployment: Deployment) -> None:
    """Stop a replaced container once it drained."""
    _remove(deployment.container, stop=True)
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
    error = health_check(deployment, deploy)
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


@upkeep.every(10)
def undeploy_removed() -> list[str]:
    """Jobs whose [deploy] (or whole directory) was deleted lose their containers and route.

    A job.toml that does not load is left alone: a typo must not take an app down.
    """
    cfg = settings()
    gone = []
    running = Deployment.select(Deployment.job).where(Deployment.state.in_(RUNNING_STATES))
    for job_name in sorted({d.job for d in running.distinct()}):
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


def _restart(deployment: Deployment) -> None:
    """Restart the live container; the route follows if its address changed."""
    try:
        container = client().containers.get(deployment.container)
        container.restart(timeout=10)
        container.reload()
    except (DockerException, requests.RequestException) as exc:
        log.warning("could not restart %s: %s", deployment.container, engine_error(exc))
        return
    log.warning("restarted %s", container_name(deployment.job, deployment.slot))
    ip = container.attrs["NetworkSettings"]["Networks"].get(NETWORK, {}).get("IPAddress")
    address = f"{ip}:{deployment.address.rpartition(':')[2]}"
    if ip and address != deployment.address:
        Deployment.update(address=address).where(Deployment.id == deployment.id).execute()
        _forget_route(deployment.job)
        deployment.address = address
        write_upstream(settings(), deployment.job, address, deployment)


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
    for build in stranded:
        release(build.id, "lost", error=f"deploy interrupted: worker {build.worker} stopped")


# -- rollback, undeploy, pruning ----------------------------------------------


def rollback(job_name: str, trigger: str = "cli") -> Deployment:
    """Start the image that was live before the current one, through the same checks."""
    cfg = settings()
    job = jobs.load(cfg, job_name)
    if not job.deploy:
        raise UserError(f"job {job_name!r} has no [deploy]")
    live = live_deployment(job_name)
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
    for candidate in earlier:
        try:
            client().images.get(candidate.image_id)
        except ImageNotFound:
            continue
        return launch(job, candidate.image, candidate.image_id, f"rollback ({trigger})")
    raise UserError(f"job {job_name!r} has no earlier image to roll back to", status=409)


def wait(deployment_id: int, timeout: float = 3600) -> Deployment:
    """Drive one deployment to live or failed from this process (the CLI needs no scheduler)."""
    deadline = time.time() + timeout
    while True:
        deployment = Deployment.get_by_id(deployment_id)
        if deployment.state != CHECKING or time.time() > deadline:
            return deployment
        now = time.time()
        if deployment.next_check_at <= now and _take(deployment, now):
            advance(deployment)
            continue
        time.sleep(min(0.2, max(0.0, deployment.next_check_at - now)))


def undeploy(job_name: str) -> int:
    """Stop the job's containers, free its route; returns how many containers stopped."""
    jobs.check_name(job_name)
    cfg = settings()
    now = time.time()
    stopped = 0
    for deployment in Deployment.select().where(
        Deployment.job == job_name, Deployment.state.in_(RUNNING_STATES)
    ):
        _remove(deployment.container, stop=True)
        Deployment.update(state=STOPPED, finished_at=now, next_check_at=None).where(
            Deployment.id == deployment.id
        ).execute()
        if deployment.build_id and deployment.state == CHECKING:
            release(deployment.build_id, "cancelled", error="undeployed", stage="deploy")
        stopped += 1
    for container in containers(
        f"lightci.job={job_name}", "lightci.role=app", f"{HOME_LABEL}={cfg.home}"
    ):
        try:
            container.remove(force=True)
        except NotFound:
            pass
    _forget_route(job_name)
    for path in upstream_files(cfg, job_name):
        path.unlink(missing_ok=True)
    return stopped


@upkeep.daily("upkeep.retention_at")
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
            if d.state in RUNNING_STATES or (d.image_id not in keep and len(keep) < keep_last):
                keep.add(d.image_id)
        for image in client().images.list(name=f"lightci/{job_name.lower()}"):
            if image.id in keep:
                continue
            for tag in image.tags:
                try:
                    client().images.remove(tag, noprune=False)
                    removed.append(tag)
                except DockerException as exc:
                    log.info("keeping %s: %s", tag, engine_error(exc))
    return removed


def _remove(container_id: str, stop: bool = False) -> None:
    try:
        container = client().containers.get(container_id)
        if stop:
            container.stop(timeout=10)
        container.remove(force=True)
    except NotFound:
        pass
    except (DockerException, requests.RequestException) as exc:
        log.warning("could not remove container %s: %s", container_id[:12], engine_error(exc))


def _last_log_lines(container_id: str) -> str:
    try:
        raw = client().containers.get(container_id).logs(tail=LOG_LINES)
    except (DockerException, requests.RequestException):
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


def live_deployment(job_name: str) -> Deployment | None:
    return (
        Deployment.select()
        .where(Deployment.job == job_name, Deployment.state == LIVE)
        .order_by(Deployment.switched_at.desc())
        .first()
    )


_routes: dict[str, tuple[float, str]] = {}
_routes_lock = threading.Lock()


def route(job_name: str) -> str:
    """host:port of the job's live container ('' when none), cached for ROUTE_TTL seconds.

    Every web process reads the route from the job table; the old container
    drains for [deploy] drain seconds, longer than any process's cache.
    """
    now = time.monotonic()
    cached = _routes.get(job_name)
    if cached is not None and now - cached[0] < ROUTE_TTL:
        return cached[1]
    live = live_deployment(job_name)
    address = live.address if live is not None else ""
    with _routes_lock:
        _routes[job_name] = (now, address)
    return address


def _forget_route(job_name: str) -> None:
    with _routes_lock:
        _routes.pop(job_name, None)


def write_upstream(cfg: Settings, job_name: str, address: str, deployment: Deployment) -> None:
    """Include files for nginx and Caddy in front of lightci; rewritten on every switch."""
    nginx, caddy = upstream_files(cfg, job_name)
    nginx.parent.mkdir(parents=True, exist_ok=True)
    about = (
        f"# lightci: the live container of job {job_name} ({deployment.image}, "
        f"slot {deployment.slot}, deployment {deployment.id}); rewritten on every switch\n"
    )
    upstream = re.sub(r"[^A-Za-z0-9_]", "_", f"lightci_{job_name}")
    _write_atomic(nginx, f"{about}upstream {upstream} {{\n    server {address};\n}}\n")
    _write_atomic(caddy, f"{about}reverse_proxy {address}\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- what the CLI, the API and the pages show ---------------------------------


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


def metrics() -> str:
    """Prometheus lines for /metrics: is each job's live container healthy."""
    lines = [
        "# HELP lightci_deployment_healthy 1 when the job's live container passes its checks.",
        "# TYPE lightci_deployment_healthy gauge",
    ]
    for d in Deployment.select().where(Deployment.state == LIVE).order_by(Deployment.job):
        healthy = 0 if d.health == "unhealthy" else 1
        lines.append(f'lightci_deployment_healthy{{job="{d.job}",slot="{d.slot}"}} {healthy}')
    return "\n".join(lines) + "\n"
