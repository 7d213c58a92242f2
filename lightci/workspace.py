"""Per-build directories, tool caches, the environment of a stage, and the git checkout.

Layout (SPEC section 2):
    builds/<job>/<number>/{workspace,home,tmp,artifacts}/ and log.txt
                          ended    (a build that ended lost: no stage of it starts now)
    caches/<job>/<key>/   (cache = "key")     caches/<job>/_job/   (cache = "job")
    mirrors/<job>.git     one bare mirror per job with a repo (lightci.checkout)
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from lightci.config import Settings
from lightci.errors import UserError
from lightci.jobs import CACHE_VARS, Job
from lightci.models import Build
from lightci.secretfile import read_secrets

ENDED = "ended"


@dataclass(frozen=True)
class BuildDirs:
    """A build's directories; each path is made once (a stage asks for them many times)."""

    root: Path
    cache: Path

    @functools.cached_property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @functools.cached_property
    def home(self) -> Path:
        return self.root / "home"

    @functools.cached_property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @functools.cached_property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @functools.cached_property
    def log(self) -> Path:
        return self.root / "log.txt"

    @functools.cached_property
    def ended(self) -> Path:
        return self.root / ENDED

    def create(self) -> None:
        for path in (self.workspace, self.home, self.tmp, self.artifacts, self.cache):
            path.mkdir(parents=True, exist_ok=True)


def key_dirname(key: str) -> str:
    """A key as one safe directory name; the hash keeps 'a/b' and 'a_b' apart."""
    rendered = key.split(":", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", rendered).strip("._") or "_"
    return f"{slug[:80]}-{hashlib.sha1(rendered.encode()).hexdigest()[:8]}"


def build_root(cfg: Settings, job: str, number: int) -> Path:
    return cfg.builds_dir / job / str(number)


def mark_ended(root: Path) -> None:
    """No stage of the build starts after this (lightci.stageproc looks before and after)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ENDED).touch()


def log_path(cfg: Settings, build: Build) -> Path:
    return build_root(cfg, build.job, build.number) / "log.txt"


def append_log(cfg: Settings, build: Build, text: str) -> None:
    """Text at the end of a build's log from outside its run (a crash, a sweep), if the
    log can be written: its end must not wait for a disk with room."""
    try:
        with open(log_path(cfg, build), "a") as log_file:
            log_file.write(text)
    except OSError:
        pass


def dirs_for(cfg: Settings, job: Job, build: Build) -> BuildDirs:
    root = build_root(cfg, build.job, build.number)
    if job.cache == "key":
        cache = cfg.caches_dir / job.name / key_dirname(build.key)
    elif job.cache == "job":
        cache = cfg.caches_dir / job.name / "_job"
    else:
        cache = root / "cache"
    return BuildDirs(root=root, cache=cache)


def environment(
    cfg: Settings, job: Job, build: Build, dirs: BuildDirs, secrets: dict[str, str]
) -> dict[str, str]:
    """The whole environment of a stage: nothing leaks in from the worker but pass_env."""
    env = {name: os.environ[name] for name in cfg["builds"]["pass_env"] if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        HOME=str(dirs.home),
        TMPDIR=str(dirs.tmp),
        CI="true",
        LIGHTCI_JOB=job.name,
        LIGHTCI_BUILD_ID=str(build.id),
        LIGHTCI_BUILD_NUMBER=str(build.number),
        LIGHTCI_KEY=build.key,
        LIGHTCI_BRANCH=build.branch,
        LIGHTCI_COMMIT=build.commit,
        LIGHTCI_TRIGGER=build.trigger,
        LIGHTCI_WORKSPACE=str(dirs.workspace),
        LOCAL_DIR=str(dirs.workspace),
        LIGHTCI_ARTIFACTS=str(dirs.artifacts),
        LIGHTCI_CACHE=str(dirs.cache),
        LIGHTCI_TAG=build.tag,
        LIGHTCI_PR="" if build.pr is None else str(build.pr),
        LIGHTCI_PR_BASE=build.pr_base,
    )
    for var, sub in CACHE_VARS.items():
        env[var] = str(dirs.cache / sub)
    for name, value in build.param_dict.items():
        env[name.upper()] = value
    env.update(job.env)
    env.update(secrets)
    return env


def job_secrets(cfg: Settings, job: Job, build: Build | None = None) -> dict[str, str]:
    """The job's secrets from secrets.env; a missing one is the user's to fix.

    A pull request from a fork runs code nobody here reviewed: no secrets,
    unless the job says fork_secrets = true."""
    if not job.secrets or (build is not None and build.fork and not job.fork_secrets):
        return {}
    available = read_secrets(cfg.secrets_file)
    missing = [name for name in job.secrets if name not in available]
    if missing:
        raise UserError(f"secret(s) {', '.join(missing)} not in {cfg.secrets_file}")
    return {name: available[name] for name in job.secrets}


# -- sizes, a full disk, removal ------------------------------------------------

FULL_BELOW = 1024 * 1024  # free bytes under which the home's disk counts as full


def disk_full(cfg: Settings) -> str:
    """Why the home's disk counts as full ("disk full: ..."), or "" while there is room."""
    try:
        free = shutil.disk_usage(cfg.home).free
    except OSError:
        return ""
    if free >= FULL_BELOW:
        return ""
    return f"disk full: {free // 1024} KB free under {cfg.home}"


def disk_full_error(exc: BaseException) -> bool:
    """An error that means the disk is full (a file write, or the database's own words)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "database or disk is full" in text or "no space left on device" in text


def size(path: Path) -> int:
    """Bytes used below path (each hard-linked file once)."""
    total, seen = 0, set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def remove(path: Path) -> None:
    """Remove a tree, including the read-only files Go and some tools leave."""

    def onerror(func, failed, _exc):
        parent = os.path.dirname(failed)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        if os.path.isdir(failed) and not os.path.islink(failed):
            os.chmod(failed, os.stat(failed).st_mode | stat.S_IRWXU)
        func(failed)

    if path.exists():
        shutil.rmtree(path, onerror=onerror)
