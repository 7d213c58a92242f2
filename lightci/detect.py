"""A job proposed from a repository (POST /api/detect): its branch's files through a mirror.

The branch is fetched into a temporary bare mirror under HOME/mirrors (a name
no job can have), its file list and the few files the recipes ask for are read
with git, and the mirror is removed. Nothing of the repository runs: git only
fetches and reads objects, and only over file, git, http(s) and ssh.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from lightci import recipes
from lightci.checkout import GIT_ENV, git_auth
from lightci.config import Settings
from lightci.errors import UserError
from lightci.jobs import valid_branch
from lightci.logs import hide_credentials
from lightci.workspace import remove

MAX_FILES = 20000  # paths of a tree the recipes look at
MAX_READ = 256 * 1024  # bytes of one file they read
FETCH_TIMEOUT = 300  # seconds


def _checked(repo: Any, branch: Any) -> tuple[str, str]:
    if not isinstance(repo, str) or not repo.strip():
        raise UserError('"repo" must be a git URL or path, such as https://git.example.com/a.git')
    repo = repo.strip()
    if len(repo) > 1000 or repo.startswith("-") or any(ord(c) < 32 for c in repo):
        raise UserError(f"repo {repo[:80]!r} is not a git URL or path")
    if branch is None or branch == "":
        return repo, ""
    if not isinstance(branch, str) or not valid_branch(branch):
        raise UserError(f"branch {str(branch)[:80]!r} is not a valid git branch name")
    return repo, branch


def propose(cfg: Settings, repo: Any, branch: Any) -> dict[str, Any]:
    """{"kind", "toml", "scripts", "notes"} for the branch (default: the remote's HEAD)."""
    import sh  # where git runs: see checkout

    repo, branch = _checked(repo, branch)
    cfg.mirrors_dir.mkdir(parents=True, exist_ok=True)
    mirror = cfg.mirrors_dir / f".detect-{secrets.token_hex(6)}.git"
    env = {
        **os.environ,
        **GIT_ENV,
        "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(mirror),
    }
    url, auth = git_auth(repo)  # a URL's user:password@ stays out of argv and the answer
    env.update(auth)
    shown = hide_credentials(url)
    git = sh.git.bake("--git-dir", str(mirror), _env=env, _tty_out=False, _decode_errors="replace")
    try:
        sh.git("init", "--quiet", "--bare", str(mirror), _env=env)
        ref = f"refs/heads/{branch}" if branch else "HEAD"
        try:
            git("fetch", "--quiet", "--depth", "1", "--", url, f"{ref}:refs/lightci/detect",
                _timeout=FETCH_TIMEOUT)  # fmt: skip
        except sh.ErrorReturnCode as exc:
            said = exc.stderr.decode(errors="replace").strip().splitlines()
            fatal = [line.removeprefix("fatal: ") for line in said if line.startswith("fatal:")]
            reason = hide_credentials((fatal or said or [f"git exit {exc.exit_code}"])[0])
            raise UserError(f"cannot fetch {branch or 'HEAD'} of {shown}: {reason}") from None
        except sh.TimeoutException:
            raise UserError(f"fetching {shown} took over {FETCH_TIMEOUT} s") from None
        tree = _tree(git)
        return recipes.propose(tree).as_dict(repo, branch)
    finally:
        remove(mirror)


def _tree(git) -> recipes.Tree:
    listing = str(git("ls-tree", "-r", "-z", "--name-only", "refs/lightci/detect"))
    files = [f for f in listing.split("\0") if f][:MAX_FILES]

    def read(path: str) -> str | None:
        size = int(str(git("cat-file", "-s", f"refs/lightci/detect:{path}")).strip())
        if size > MAX_READ:
            return None
        data = git("cat-file", "blob", f"refs/lightci/detect:{path}", _return_cmd=True).stdout
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    return recipes.Tree(files, read)
