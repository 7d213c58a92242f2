"""Small local git repositories for tests: commit files, push to a bare repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
        env={**os.environ, **GIT_ENV},
    )  # fmt: skip
    return done.stdout.strip()


class Repo:
    """A work tree and its bare origin; commit() writes files and pushes the branch."""

    def __init__(self, root: Path, name: str = "app"):
        self.work = root / f"{name}-src"
        self.bare = root / f"{name}.git"
        self.work.mkdir(parents=True)
        git("init", "-q", "-b", "main", cwd=self.work)
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=root)

    def commit(self, files: dict[str, str | None], branch: str = "main") -> str:
        """Write (or, for None, delete) files on branch; returns the new commit id."""
        if not git("branch", "--list", cwd=self.work):  # no commit yet
            git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=self.work)
        elif git("branch", "--list", branch, cwd=self.work):
            git("checkout", "-q", branch, cwd=self.work)
        else:  # a new branch from the one checked out
            git("checkout", "-q", "-b", branch, cwd=self.work)
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if name.endswith(".sh"):
                path.chmod(0o755)
        git("add", "-A", ".", cwd=self.work)
        git("commit", "-qm", f"change {', '.join(files)}", "--allow-empty", cwd=self.work)
        git("push", "-q", str(self.bare), branch, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)
