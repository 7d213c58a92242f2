"""A build's artifacts: what its stages left in $LIGHTCI_ARTIFACTS, plus the job's
`artifacts = [...]` globs copied out of the workspace once the stages ended.

They live in the build's own directory (builds/<job>/<number>/artifacts), so
retention removes them with their build. Only regular files count: a symlink a
stage left there could point anywhere on the host, so it is neither copied,
listed nor served.

Both directories are the build's to write, and the worker and the server read and
write them with the host's rights, so every path in them is walked one component
at a time relative to its parent's file descriptor, never following a symlink
(O_NOFOLLOW): a symlink planted where a directory was expected, or swapped in
between a check and an open, fails the open instead of leading out.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lightci.config import Settings
from lightci.errors import UserError
from lightci.jobs import Job, matches_any
from lightci.models import Build
from lightci.workspace import BuildDirs, build_root

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 20


def collect(job: Job, dirs: BuildDirs, out) -> int:
    """Copy the workspace's files that match the job's globs; returns how many."""
    if not job.artifacts or not dirs.workspace.is_dir():
        return 0
    kept = 0
    try:
        for rel in _files(dirs.workspace):
            if not matches_any(rel, job.artifacts):
                continue
            try:
                _copy(dirs.workspace, dirs.artifacts, rel)
                kept += 1
            except _NotAFile:
                out.note(f"artifact {rel} skipped: not a regular file in the build's directories")
    except OSError as exc:  # a full disk, a folder it may not read: the build's result stands
        out.note(f"artifacts not all kept: {exc}")
    out.note(f"kept {kept} artifact(s) matching {', '.join(job.artifacts)}")
    return kept


def listing(cfg: Settings, build: Build) -> list[dict]:
    """[{"path", "size"}] of the build's artifacts, by path."""
    root = _root(cfg, build)
    if not root.is_dir():
        return []
    found = []
    for rel in sorted(_files(root)):
        try:
            with _open(root, rel) as f:
                found.append({"path": rel, "size": os.fstat(f.fileno()).st_size})
        except (OSError, _NotAFile):  # gone, or swapped for a symlink since the walk
            continue
    return found


def open_artifact(cfg: Settings, build: Build, rel: str) -> BinaryIO:
    """One artifact, open for reading; 404 for anything but a regular file in the directory."""
    missing = UserError(f"build {build.id} has no artifact {rel[:200]!r}", status=404)
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\0" in rel:
        raise missing
    try:
        return _open(_root(cfg, build), rel)
    except (OSError, _NotAFile):
        raise missing from None


class _NotAFile(Exception):
    """A path that is a symlink, a directory or a device where a regular file was expected."""


def _open(top: Path, rel: str) -> BinaryIO:
    """top/rel for reading, no component of rel a symlink, the file a regular one."""
    *folders, name = rel.split("/")
    parent = _descend(top, folders)
    try:
        # Looked at before it is opened: opening a device node a build made (a root
        # container can) may do something. Then the open one must be the one looked at.
        seen = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISREG(seen.st_mode):
            raise _NotAFile(rel)
        fd = _no_link(lambda: os.open(name, _READ, dir_fd=parent))
    finally:
        os.close(parent)
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
            raise _NotAFile(rel)  # swapped between the look and the open
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _copy(source_top: Path, target_top: Path, rel: str) -> None:
    """source_top/rel to target_top/rel as a new file; neither side may lead out by a symlink."""
    with _open(source_top, rel) as source:
        *folders, name = rel.split("/")
        parent = _descend(target_top, folders, make=True)
        try:
            try:
                os.unlink(name, dir_fd=parent)  # a new file: never write through an old name
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                raise _NotAFile(rel) from None
            target = _no_link(lambda: os.open(name, _WRITE, 0o644, dir_fd=parent))
        finally:
            os.close(parent)
        with os.fdopen(target, "wb") as sink:
            while chunk := source.read(CHUNK):
                sink.write(chunk)


def _descend(top: Path, folders: list[str], make: bool = False) -> int:
    """An fd of top/folders..., each opened without following a symlink; made when `make`."""
    fd = os.open(top, _DIR)
    try:
        for folder in folders:
            if make:
                try:
                    os.mkdir(folder, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            inner = _no_link(lambda: os.open(folder, _DIR, dir_fd=fd))  # noqa: B023
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _no_link(opening) -> int:
    """An open that meets a symlink (ELOOP) or a non-directory (ENOTDIR) is _NotAFile."""
    try:
        return opening()
    except (NotADirectoryError, IsADirectoryError) as exc:
        raise _NotAFile(str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise _NotAFile(str(exc)) from None
        raise


def _root(cfg: Settings, build: Build) -> Path:
    return build_root(cfg, build.job, build.number) / "artifacts"


def _files(top: Path) -> Iterator[str]:
    """Regular files under top (symlinks neither followed nor listed), as relative paths."""
    for folder, subdirs, names in os.walk(top, followlinks=False):
        base = Path(folder)
        subdirs[:] = [d for d in subdirs if not (base / d).is_symlink()]
        for name in names:
            try:
                regular = stat.S_ISREG((base / name).lstat().st_mode)
            except OSError:  # gone, or in a folder it may list but not search
                continue
            if regular:
                yield (base / name).relative_to(top).as_posix()
