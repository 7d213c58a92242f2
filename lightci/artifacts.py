"""A build's artifacts: what its stages left in $LIGHTCI_ARTIFACTS, plus the job's
`artifacts = [...]` globs copied out of the workspace once the stages ended.

They live in the build's own directory (builds/<job>/<number>/artifacts), so
retention removes them with their build. Only regular files count: a symlink a
stage left there could point anywhere on the host, so it is neither copied,
listed nor served.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lightci.config import Settings
from lightci.errors import UserError
from lightci.jobs import Job, matches_any
from lightci.models import Build
from lightci.workspace import BuildDirs, build_root


def collect(job: Job, dirs: BuildDirs, out) -> int:
    """Copy the workspace's files that match the job's globs; returns how many."""
    if not job.artifacts or not dirs.workspace.is_dir():
        return 0
    kept = 0
    try:
        for rel in _files(dirs.workspace):
            if matches_any(rel, job.artifacts):
                target = dirs.artifacts / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dirs.workspace / rel, target, follow_symlinks=False)
                kept += 1
    except OSError as exc:  # a full disk: the build's result stands, the log says why
        out.note(f"artifacts not all kept: {exc}")
    out.note(f"kept {kept} artifact(s) matching {', '.join(job.artifacts)}")
    return kept


def listing(cfg: Settings, build: Build) -> list[dict]:
    """[{"path", "size"}] of the build's artifacts, by path."""
    root = _root(cfg, build)
    if not root.is_dir():
        return []
    return [{"path": rel, "size": (root / rel).stat().st_size} for rel in sorted(_files(root))]


def path_of(cfg: Settings, build: Build, rel: str) -> tuple[Path, str]:
    """(the artifacts directory, the file's path in it) for a download; 404 for anything else."""
    root = _root(cfg, build).resolve()
    missing = UserError(f"build {build.id} has no artifact {rel[:200]!r}", status=404)
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\0" in rel:
        raise missing
    path = root.joinpath(*parts)
    # No component may be a symlink: the file must really be in the build's directory.
    for depth in range(1, len(parts) + 1):
        if root.joinpath(*parts[:depth]).is_symlink():
            raise missing
    if not path.is_file() or not path.resolve().is_relative_to(root):
        raise missing
    return root, rel


def _root(cfg: Settings, build: Build) -> Path:
    return build_root(cfg, build.job, build.number) / "artifacts"


def _files(top: Path) -> list[str]:
    """Regular files under top (symlinks neither followed nor listed), as relative paths."""
    found = []
    for folder, subdirs, names in os.walk(top, followlinks=False):
        base = Path(folder)
        subdirs[:] = [d for d in subdirs if not (base / d).is_symlink()]
        for name in names:
            path = base / name
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(top).as_posix())
    return found
