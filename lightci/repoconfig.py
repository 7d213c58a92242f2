"""The pipeline in the repository: a job with config = "repo" reads .lightci/ at the built commit.

The server's jobs/<job>/job.toml keeps what the repository must not decide:
where the code comes from, who may trigger it, which secrets it gets, its
memory, its forge and its notifications. The commit's .lightci/job.toml and
.lightci/<stage>.sh give the pipeline: stages, env, timeout, cache, [docker],
[deploy]. A key the in-repo file sets wins; one it leaves out keeps the
server's value.

What acts when a build is queued, before any commit is read, stays the
server's: the key is rendered from the server's `key` and `params` (a trigger
may override only those params), `queue_timeout` and `supersede` too. The
in-repo `params` may add defaults for names the server's file does not have;
they reach the stages as environment variables like any param.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from typing import Any

from lightci import jobs, workspace
from lightci.config import Settings
from lightci.errors import UserError
from lightci.jobs import Job
from lightci.models import Build
from lightci.workspace import BuildDirs

REPO_DIR = ".lightci"
# Keys only the server's job.toml may set: an in-repo file naming one is an error,
# so a branch can never grant itself a secret, a bigger memory or another forge.
SERVER_ONLY = (
    "repo",
    "branches",
    "tags",
    "paths",
    "pull_requests",
    "webhook_secret",
    "secrets",
    "fork_secrets",
    "memory",
    "forge",
    "notify",
    "schedule",
    "schedules",
    "priority",
    "gitops",
    "images",
    "config",
)
# Read when the build is queued: the repository's value cannot change it any more.
AT_QUEUE_TIME = ("key", "queue_timeout", "supersede")
# What an in-repo [deploy] may decide for its build's container; the rest (where the
# image is pushed, its health checks) is the server's, as the upkeep reads it.
REPO_DEPLOY = ("dockerfile", "port", "env")


def read(cfg: Settings, server: Job, dirs: BuildDirs, commit: str) -> tuple[Job, dict[str, Any]]:
    """The commit's .lightci/ parsed and checked: (the repository's job, its raw table).

    Every error names the commit and the file, in the loader's own words.
    """
    where = f"commit {commit[:12]}"
    root = dirs.workspace.resolve()
    repo_dir = dirs.workspace / REPO_DIR
    if not repo_dir.is_dir():
        raise UserError(
            f'{where}: no {REPO_DIR}/ directory: the job has config = "repo", so the '
            f"commit needs {REPO_DIR}/job.toml and {REPO_DIR}/<stage>.sh"
        )
    for path in (repo_dir, repo_dir / "job.toml", *repo_dir.glob("*.sh")):
        if path.exists() and not path.resolve().is_relative_to(root):
            inside = path.relative_to(dirs.workspace)  # .lightci, or a file in it
            raise UserError(f"{where}: {inside} points outside the repository")
    toml = repo_dir / "job.toml"
    data: dict[str, Any] = {}
    try:
        if toml.exists():
            data = tomllib.loads(toml.read_text())
        deploy = data.get("deploy") if isinstance(data.get("deploy"), dict) else {}
        named = [*data, *(f"deploy.{k}" for k in deploy if k not in REPO_DEPLOY)]
        for key in named:
            if key in SERVER_ONLY or key.startswith("deploy."):
                raise UserError(
                    f"{toml}: {key}: only the server's job.toml may set it "
                    f"(jobs/{server.name}/job.toml), never the repository"
                )
        own = jobs.parse(server.name, repo_dir, server.shared_dir)
        if own.deploy and not server.deploy:  # health checks and upkeep read the server's
            raise UserError(
                f"{toml}: deploy: the server's jobs/{server.name}/job.toml needs a [deploy] "
                "table too (its health checks and upkeep read it)"
            )
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: {REPO_DIR}/job.toml: not valid TOML: {exc}") from None
    except UserError as exc:
        text = str(exc).replace(f"{dirs.workspace}/", "").replace(f"{root}/", "")
        raise UserError(f"{where}: {text}", exc.status) from None
    return own, data


def merge(server: Job, own: Job, data: dict[str, Any]) -> Job:
    """The server's job with the repository's pipeline (see the module's docstring)."""
    changes: dict[str, Any] = {
        "dir": own.dir,
        "stages": own.stages,
        "env": {**server.env, **own.env},
        "params": {**own.params, **server.params},
    }
    for key in data:  # every other pipeline key the file sets (after, artifacts, ...)
        if key not in (*AT_QUEUE_TIME, "params", "env", "stages", "deploy") and hasattr(own, key):
            changes[key] = getattr(own, key)
    if "deploy" in data:  # the keys it names (REPO_DEPLOY), over the server's table
        changes["deploy"] = {**server.deploy, **{k: own.deploy[k] for k in data["deploy"]}}
    return replace(server, **changes)


def apply(
    cfg: Settings,
    server: Job,
    build: Build,
    dirs: BuildDirs,
    commit: str,
    secrets: dict[str, str],
    out,
    watched,
) -> tuple[Job, BuildDirs, dict[str, str]]:
    """After the checkout: the build's job, dirs and environment from the commit's pipeline."""
    own, data = read(cfg, server, dirs, commit)
    job = merge(server, own, data)
    out.note(f"pipeline from {REPO_DIR}/ at {commit[:12]}: stages {', '.join(job.stages)}")
    for key in AT_QUEUE_TIME:
        if key in data and data[key] != getattr(server, key):
            out.note(
                f"{REPO_DIR}/job.toml: {key} is used when a build is queued, before the "
                f"commit is read: this build keeps the server's {getattr(server, key)!r}"
            )
    if job.timeout != server.timeout:
        timeout = job.timeout or cfg["builds"]["timeout"]
        watched.deadline += timeout - watched.timeout
        watched.timeout = timeout
        Build.update(timeout=timeout).where(Build.id == build.id).execute()
    if job.cache != server.cache:
        dirs = workspace.dirs_for(cfg, job, build)
        dirs.create()
    env = workspace.environment(cfg, job, build, dirs, secrets)
    for name, value in job.params.items():  # an in-repo param: its default; [env] still wins
        if name not in build.param_dict:
            env.setdefault(name.upper(), value)
    env["LIGHTCI_COMMIT"] = commit
    return job, dirs, env
