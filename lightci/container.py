"""A stage inside a container: the job's [docker] image, the workspace at the same path.

The runner calls ``run_stage`` instead of sh when a job has [docker]. The
container runs as the worker's uid:gid (or [docker] user, after which the
build's files are given back), so everything it writes into the workspace
stays removable by lightci. The worker thread follows the container and stops
it as soon as the runner's watchdog names a reason (timeout, cancel); it is
removed in every case, so no container outlives its stage.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from lightci.config import parse_memory, settings
from lightci.jobs import Job, load_all
from lightci.jobtables import DOCKER_CACHES
from lightci.logs import BuildLog
from lightci.models import ACTIVE, FAILED, Build, Stage, db
from lightci.workspace import CACHE_VARS, BuildDirs

if TYPE_CHECKING:
    import docker

POLL = 0.25  # seconds between looks at the watchdog's verdict while a container runs
REMOVE_FOR = 30  # seconds a stage's container removal is retried before the sweep's turn
SCRIPT_DIR = "/lightci"
LABEL = "lightci.build"  # on every build container: upkeep removes those of ended builds
HOME_LABEL = "lightci.home"  # build ids are per home, and several homes may share an engine
NETWORK = "lightci"  # the bridge network deployed apps run on

# The tools that read their cache location from the environment; maven and
# cargo find theirs under $HOME/.m2 and $CARGO_HOME, which the image sets.
CACHE_ENV = {
    "pub": "PUB_CACHE",
    "pip": "PIP_CACHE_DIR",
    "npm": "npm_config_cache",
    "gradle": "GRADLE_USER_HOME",
}
# The host's own values of these would break the image's.
HOST_ONLY = {"PATH", "HOME", "SHELL", "USER", "LOGNAME", *CACHE_VARS}

_client: docker.DockerClient | None = None
_client_lock = threading.Lock()


def container_name(job_name: str, slot: str) -> str:
    """A job's app container in a slot, this home's: two homes on one engine may both have a
    job of that name, and the slot's leftover is removed by this name before a deploy."""
    return f"lightci-{job_name}-{slot}-{_home_tag()}"


def client() -> docker.DockerClient:
    """One Docker client per process (DOCKER_HOST or the default socket).

    The SDK (and requests under it, ~8 MB) is imported here, by the first
    process that uses the engine: a server whose jobs never use docker never loads it.
    """
    global _client
    with _client_lock:
        if _client is None:
            import docker  # optional: only a job with [docker] or [deploy] needs the engine

            _client = docker.from_env(timeout=120)
        return _client


def docker_error(name: str) -> tuple[type[Exception], ...]:
    """docker.errors.<name> for an except clause, without importing docker.

    An exception of docker's can only come from a client, and making one imports
    docker (client()); until then there is nothing to catch: an empty tuple.
    """
    errors = sys.modules.get("docker.errors")
    return (getattr(errors, name),) if errors is not None else ()


def transport_errors() -> tuple[type[Exception], ...]:
    """requests' errors (the SDK's transport: an engine that cannot be reached), likewise."""
    transport = sys.modules.get("requests")
    return (transport.RequestException,) if transport is not None else ()


def engine_failures() -> tuple[type[Exception], ...]:
    """What an engine call raises when the engine refuses or cannot be reached."""
    return docker_error("DockerException") + transport_errors()


def containers(*labels: str) -> list:
    """Containers (running or not) with all these labels.

    The SDK lists, then inspects each one; a container removed in between (a
    sibling's cleanup) fails the whole call with NotFound, so list again.
    """
    for attempt in range(5):
        try:
            return client().containers.list(all=True, filters={"label": list(labels)})
        except docker_error("NotFound"):
            if attempt == 4:
                raise
    return []


def engine_error(exc: Exception) -> str:
    """The engine's own words for what went wrong, on one line; or, when no engine
    answered at all, where lightci looked for one (the SDK's words for that are a
    urllib3 traceback's last line: "Error while fetching server API version: ...")."""
    text = getattr(exc, "explanation", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(str(text).split())
    transport = sys.modules.get("requests")
    refused = transport is not None and isinstance(exc, transport.ConnectionError)
    if refused or "Error while fetching server API version" in text:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return (
            f"no Docker engine answers at {where} (is dockerd running? DOCKER_HOST names "
            f"another): {text[-160:]}"
        )
    return text


def ensure_image(image: str, out: BuildLog) -> None:
    """Use the local image, or pull it; raises DockerException with the engine's reason."""
    api = client().api
    try:
        api.inspect_image(image)
        return
    except docker_error("ImageNotFound"):
        pass
    from docker.errors import DockerException
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(image)
    out.note(f"pulling {image}")
    for event in api.pull(repository, tag=tag or "latest", stream=True, decode=True):
        if "error" in event:
            raise DockerException(event["error"])
        if event.get("status") and not event.get("progressDetail"):
            out.write(f"{event.get('id', '')} {event['status']}\n".lstrip())


def cache_mounts(job: Job, dirs: BuildDirs) -> dict[str, dict[str, str]]:
    """Each of the job's caches, from the cache dir its policy picks, at the tool's own path."""
    mounts = {}
    for name in job.docker.get("caches", []):
        source = dirs.cache
        for part in ("cargo", "registry") if name == "cargo" else (name,):
            source = source / part
            # The cache is the build's to write: a symlink a stage left here would have
            # the engine mount what it points at, the host's / say, into the next stage.
            if source.is_symlink() or (source.exists() and not source.is_dir()):
                source.unlink()
            source.mkdir(exist_ok=True)
        mounts[str(source)] = {"bind": DOCKER_CACHES[name], "mode": "rw"}
    return mounts


def environment(job: Job, env: dict[str, str], dirs: BuildDirs) -> dict[str, str]:
    """The build's environment, minus what only makes sense on the host."""
    inside = {k: v for k, v in env.items() if k not in HOST_ONLY}
    if not job.docker.get("user"):  # else the image's own HOME of that user
        # Root finds the mounted caches at their usual place under /root.
        inside["HOME"] = "/root" if os.getuid() == 0 else str(dirs.home)
    for name in job.docker.get("caches", []):
        if name in CACHE_ENV:
            inside[CACHE_ENV[name]] = DOCKER_CACHES[name]
    return inside


def run_stage(
    job: Job,
    build: Build,
    name: str,
    position: int,
    env: dict[str, str],
    dirs: BuildDirs,
    out: BuildLog,
    watched: Any,
) -> int:
    """Run one stage in job.docker['image']; returns its exit code.

    A failure that is not the script's (no image, out of memory) is reported
    the way the watchdog reports a timeout: through ``watched.kill_reason``,
    which the runner turns into the build's status and error.
    """
    image = job.docker["image"]
    script = job.script(name)
    started = time.time()
    out.note(f"==> stage {name} ({job.shown(name)}) in {image}")
    with db.atomic():
        stage = Stage.create(build=build.id, name=name, position=position, started_at=started)
        Build.update(stage=name).where(Build.id == build.id).execute()
    code = _run(job, build, name, position, env, dirs, out, watched, image, script)
    out.flush()
    finished = time.time()
    out.note(f"<== stage {name} exited {code} after {finished - started:.2f} s")
    Stage.update(finished_at=finished, exit_code=code).where(Stage.id == stage.id).execute()
    return code


def _home_tag() -> str:
    """Build ids repeat across homes that share an engine; container names must not."""
    return hashlib.sha1(str(settings().home).encode()).hexdigest()[:8]


def _fail(watched: Any, reason: str) -> int:
    if not watched.kill_reason:
        watched.kill_status, watched.kill_reason = FAILED, reason
    return 125  # docker run's code for "the engine could not run it"


def _run(job, build, name, position, env, dirs, out, watched, image, script) -> int:
    try:
        ensure_image(image, out)
    except engine_failures() as exc:
        return _fail(watched, f"image {image!r} is not available: {engine_error(exc)}")
    own = f"{os.getuid()}:{os.getgid()}"
    user = job.docker.get("user") or own
    inner_script = f"{SCRIPT_DIR}/{script.name}"
    command = [inner_script] if os.access(script, os.X_OK) else ["sh", inner_script]
    volumes = {
        str(path): {"bind": str(path), "mode": "rw"}
        for path in (dirs.workspace, dirs.home, dirs.tmp, dirs.artifacts, dirs.cache)
    }
    volumes[str(script)] = {"bind": inner_script, "mode": "ro"}
    volumes.update(cache_mounts(job, dirs))
    options: dict[str, Any] = {}
    if job.memory:
        limit = parse_memory(job.memory)
        options.update(mem_limit=limit, memswap_limit=limit)
    try:
        container = client().containers.create(
            image,
            entrypoint=command,  # the stage, not whatever the image's ENTRYPOINT would start
            name=f"lightci-build-{build.id}-{position}-{_home_tag()}",
            working_dir=str(dirs.workspace),
            environment=environment(job, env, dirs),
            user=user,
            volumes=volumes,
            labels={
                LABEL: str(build.id),
                HOME_LABEL: str(settings().home),
                "lightci.job": job.name,
                "lightci.stage": name,
            },
            init=True,
            **options,
        )
    except engine_failures() as exc:
        return _fail(watched, f"cannot create a container of {image!r}: {engine_error(exc)}")
    try:
        return _follow(container, job, out, watched)
    finally:
        _remove(container, out)
        if user != own:
            _give_back(image, build, dirs, out)


def _remove(container, out: BuildLog) -> None:
    """Remove the stage's container before the build may end; a busy engine gets a few tries."""
    deadline = time.time() + REMOVE_FOR
    while True:
        try:
            container.remove(force=True)
            return
        except docker_error("NotFound"):
            return
        except engine_failures() as exc:
            if time.time() > deadline:
                out.note(f"could not remove container {container.name}: {engine_error(exc)}")
                return
            time.sleep(0.5)


def _give_back(image: str, build: Build, dirs: BuildDirs, out: BuildLog) -> None:
    """Files a stage wrote as another user become lightci's again, so it can remove them."""
    owner = f"{os.getuid()}:{os.getgid()}"
    paths = [str(p) for p in (dirs.workspace, dirs.home, dirs.tmp, dirs.artifacts, dirs.cache)]
    try:
        client().containers.run(
            image,
            entrypoint=["chown", "-R", owner, *paths],
            user="0:0",
            volumes={p: {"bind": p, "mode": "rw"} for p in paths},
            labels={LABEL: str(build.id), HOME_LABEL: str(settings().home)},
            remove=True,
        )
    except engine_failures() as exc:
        out.note(f"could not give the build's files back to {owner}: {engine_error(exc)}")


def _follow(container, job: Job, out: BuildLog, watched: Any) -> int:
    """Start, stream the log, stop on the watchdog's word; returns the exit code."""
    try:
        container.start()
    except engine_failures() as exc:
        return _fail(watched, f"cannot start {job.docker['image']!r}: {engine_error(exc)}")
    chunks = container.logs(stream=True, follow=True)
    reader = threading.Thread(
        target=_copy, args=(chunks, out), name="lightci-container-log", daemon=True
    )
    reader.start()
    stopping = False
    while True:
        try:
            result = container.wait(timeout=POLL)
            break
        except transport_errors():
            if watched.kill_reason and not stopping:
                stopping = True
                grace = settings()["builds"]["kill_grace"]
                out.write(f"stopping container {container.name}: {watched.kill_reason}\n")
                try:
                    container.stop(timeout=grace)
                except engine_failures():
                    container.kill()
    reader.join(timeout=10)
    code = result.get("StatusCode", 125)
    container.reload()
    if container.attrs["State"].get("OOMKilled"):
        _fail(watched, f"out of memory (limit {job.memory})")
    return code


def _copy(chunks, out: BuildLog) -> None:
    try:
        for chunk in chunks:
            out.write(chunk)
    except engine_failures():
        pass


def remove_leftovers() -> list[str]:
    """Remove build containers whose build has ended (a worker that died mid-stage).

    Only jobs with [docker] make them: while none has it and this process never
    talked to the engine, there is nothing to look for (and docker stays unloaded).
    """
    if "docker" not in sys.modules and not any(job.docker for job in load_all(settings())[0]):
        return []
    try:
        leftovers = containers(LABEL, f"{HOME_LABEL}={settings().home}")
    except engine_failures():
        return []  # no engine: nothing of ours can run either
    if not leftovers:
        return []
    active_build_ids = {b.id for b in Build.select(Build.id).where(Build.status.in_(ACTIVE))}
    removed = []
    for container in leftovers:
        try:
            build_id = int(container.labels.get(LABEL, ""))
        except ValueError:
            continue
        if build_id not in active_build_ids:
            container.remove(force=True)
            removed.append(container.name)
    return removed
