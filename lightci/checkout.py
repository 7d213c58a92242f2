"""The git checkout of a build: one bare mirror per job, a local clone per build.

Values from a trigger (branch, commit) reach git only as checked arguments
after --end-of-options or as refs, never through a shell. sh is imported where
git runs: with asyncio and ssl it is a fifth of a resting worker's memory.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import shutil
from urllib.parse import unquote, urlsplit, urlunsplit

from lightci.config import Settings
from lightci.errors import UserError
from lightci.jobs import Job, check_branch, check_commit
from lightci.logs import hide_credentials
from lightci.models import Build
from lightci.workspace import BuildDirs, remove

_PR_REF = re.compile(r"refs/(pull|merge-requests)/[0-9]+/head\Z")
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


def checkout(cfg: Settings, job: Job, build: Build, dirs: BuildDirs, out) -> str:
    """Fetch the job's mirror and check the build's commit (or branch head) out.

    One bare mirror per job lives under the home; a repeat build fetches into
    it and clones from it locally (hard links), never the whole repository
    again. Returns the full commit id checked out. A git command that fails
    raises UserError (the repository, the network, the branch: the job's to fix).
    """
    import sh

    try:
        return _checkout(cfg, job, build, dirs, out)
    except sh.ErrorReturnCode as exc:
        raise UserError(f"git failed: exit {exc.exit_code}") from None


def _checkout(cfg: Settings, job: Job, build: Build, dirs: BuildDirs, out) -> str:
    import sh

    check_commit(build.commit)
    check_branch(build.branch)
    repo, auth = git_auth(job.repo)
    shown = hide_credentials(repo)
    env = {**os.environ, **GIT_ENV, "HOME": str(dirs.home), **auth}
    git = sh.git.bake(_env=env, _out=out, _err_to_out=True, _tty_out=False)
    cfg.mirrors_dir.mkdir(parents=True, exist_ok=True)
    mirror = cfg.mirrors_dir / f"{job.name}.git"
    with open(cfg.mirrors_dir / f"{job.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # builds of other keys may fetch at once
        if (mirror / "HEAD").exists():
            git("--git-dir", str(mirror), "remote", "set-url", "origin", repo)
            out.write(f"fetching {shown} into the mirror\n")
            git("--git-dir", str(mirror), "fetch", "--prune", "--quiet", "origin")
        else:
            out.write(f"cloning {shown} into a new mirror\n")
            tmp = mirror.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            git("clone", "--mirror", "--quiet", "--", repo, str(tmp))
            tmp.rename(mirror)
        if build.pr_ref:  # a PR's head is not on a branch of this repository
            out.write(f"fetching {build.pr_ref}\n")
            git("--git-dir", str(mirror), "fetch", "--quiet", "origin", _pr_refspec(build.pr_ref))
        if build.commit:
            rev = f"{build.commit}^{{commit}}"
        elif build.pr_ref:
            rev = f"{build.pr_ref}^{{commit}}"
        elif build.tag:
            rev = f"refs/tags/{build.tag}^{{commit}}"
        elif build.branch:
            rev = f"refs/heads/{build.branch}^{{commit}}"
        else:
            rev = "HEAD^{commit}"
        try:
            sha = str(
                sh.git(
                    "--git-dir",
                    str(mirror),
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    rev,
                    _env=env,
                )
            ).strip()
        except sh.ErrorReturnCode:
            what = build.commit or build.branch or "HEAD"
            raise UserError(f"{what!r} not found in {shown}") from None
        if dirs.workspace.exists():
            remove(dirs.workspace)
        git("clone", "--quiet", "--local", "--no-checkout", "--", str(mirror), str(dirs.workspace))
    git("-C", str(dirs.workspace), "checkout", "--quiet", "--detach", sha)
    return sha


def git_auth(url: str) -> tuple[str, dict[str, str]]:
    """(the URL without its user:password@, git's environment that sends them instead).

    Credentials in a URL would be in git's argv, which every user of the machine
    can read in `ps`, and in git's own messages, which go to the build's log.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, {}  # ssh://git@host/...: the user is part of the address
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), basic_auth(unquote(user), unquote(password))


def basic_auth(user: str, password: str) -> dict[str, str]:
    """An Authorization header through git's environment, never its argv."""
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


def _pr_refspec(ref: str) -> str:
    """+refs/pull/N/head:refs/pull/N/head; the ref is lightci's own, made from a number."""
    if not _PR_REF.match(ref):
        raise UserError(f"{ref!r} is not a pull or merge request ref")
    return f"+{ref}:{ref}"
