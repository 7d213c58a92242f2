"""Jobs written from the API and the setup pages: still files under jobs/, written atomically.

A new or changed job is written in full into a hidden directory beside the
others (jobs/.new-<name>-<random>), parsed there by the same loader as any
job, and only then put in place with one rename (a change: one exchange of
the two directories, renameat2 RENAME_EXCHANGE), so a reader sees the old job
or the new one, never half of either. Hidden directories are no job's name.
Scripts are stored 0755 (given a #! line when they have none) and never run here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from lightci import jobs
from lightci.config import Settings
from lightci.errors import UserError
from lightci.jobs import Job

SCRIPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,60}\.sh\Z")
RESERVED = ("new",)  # /jobs/new is the setup page
MAX_FILE = 256 * 1024  # bytes of one job.toml or script
# A script without a #! line gets this one: what the runner uses for a non-executable script.
DEFAULT_SHEBANG = "#!/usr/bin/env bash\n"


class JobFileError(UserError):
    """A UserError that names the form field it is about: name, toml, or script:<file>."""

    def __init__(self, message: str, field: str, status: int = 400):
        super().__init__(message, status)
        self.field = field


def check_new_name(name: Any) -> str:
    try:
        jobs.check_name(name)
    except UserError as exc:
        raise JobFileError(str(exc), "name") from None
    if name in RESERVED or name.startswith("_"):
        raise JobFileError(f"job name {name!r} is reserved: choose another", "name")
    return name


def _text(value: Any, what: str, field: str) -> str:
    if not isinstance(value, str):
        raise JobFileError(f"{what} must be a string", field)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # JSON's lone "\ud800"
        raise JobFileError(f"{what} is not valid Unicode text", field) from None
    if size > MAX_FILE:
        raise JobFileError(f"{what} is {size} bytes: at most {MAX_FILE}", field)
    if "\0" in value:
        raise JobFileError(f"{what} contains a NUL character", field)
    return value.replace("\r\n", "\n")


def checked_files(toml: Any, scripts: Any) -> dict[str, str]:
    """{file name: text} of a job as the API or a form gives it, every name and text checked."""
    if scripts is None:
        scripts = {}
    if not isinstance(scripts, dict):
        raise JobFileError('"scripts" must be an object of "NAME.sh": "text"', "scripts")
    files = {"job.toml": _text(toml if toml is not None else "", "job.toml", "toml")}
    for name, text in scripts.items():
        if not isinstance(name, str) or not SCRIPT_NAME.match(name):
            raise JobFileError(
                f"bad script name {str(name)[:70]!r}: use NAME.sh with letters, digits, "
                "'.', '_' and '-' (no paths)",
                f"script:{str(name)[:70]}",
            )
        files[name] = _text(text, name, f"script:{name}")
        if not files[name].startswith("#!"):  # stored 0755: the kernel runs it by this line
            files[name] = DEFAULT_SHEBANG + files[name]
    return files


def _write(cfg: Settings, name: str, files: dict[str, str], keep: Path | None) -> Path:
    """A hidden directory with the job's files (and the other files of `keep`), parsed."""
    cfg.jobs_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg.jobs_dir / f".new-{name}-{secrets.token_hex(4)}"
    tmp.mkdir(mode=0o755)
    try:
        if keep is not None:  # a Dockerfile, notes, a folder of files beside the scripts stay
            for path in keep.iterdir():
                if path.suffix == ".sh" or path.name == "job.toml":
                    continue  # the given set replaces these
                if path.is_dir() and not path.is_symlink():
                    shutil.copytree(path, tmp / path.name, symlinks=True)
                elif path.is_file() or path.is_symlink():
                    shutil.copy2(path, tmp / path.name, follow_symlinks=False)
        for file_name, text in files.items():
            mode = 0o600 if file_name == "job.toml" else 0o755
            fd = os.open(tmp / file_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp / file_name, mode)  # whatever the umask
        validate_dir(cfg, name, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def validate_dir(cfg: Settings, name: str, tmp: Path) -> Job:
    """Parse like the loader; its message names the job's real directory, not the temp one."""
    final = cfg.jobs_dir / name
    try:
        return jobs.parse(name, tmp, cfg.jobs_dir / "_shared")
    except UserError as exc:
        text = str(exc).replace(str(tmp), str(final))
        field = "script" if "no script for stage" in text else "toml"
        raise JobFileError(text, field) from None


def validate(cfg: Settings, name: str, toml: Any, scripts: Any) -> Job:
    """The job these files would make, or the loader's error; nothing is kept."""
    check_new_name(name)
    tmp = _write(cfg, name, checked_files(toml, scripts), None)
    try:
        return validate_dir(cfg, name, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def create(cfg: Settings, name: Any, toml: Any, scripts: Any) -> Job:
    """A new job directory, in place at once or not at all; 409 when the name is taken."""
    name = check_new_name(name)
    final = cfg.jobs_dir / name
    if final.exists():
        raise JobFileError(f"job {name!r} exists already: edit it instead", "name", 409)
    tmp = _write(cfg, name, checked_files(toml, scripts), None)
    try:
        os.rename(tmp, final)  # refuses (ENOTEMPTY) if another create won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise JobFileError(f"job {name!r} exists already: edit it instead", "name", 409) from None
    return jobs.load(cfg, name)


def update(cfg: Settings, name: str, toml: Any, scripts: Any) -> Job:
    """Replace a job's job.toml and its set of scripts; its other files stay.

    An omitted toml or scripts keeps what the job has.
    """
    job_dir = existing_dir(cfg, name)
    now = current_files(cfg, name)
    if toml is None:
        toml = now["job.toml"]
    if scripts is None:
        scripts = {k: v for k, v in now.items() if k != "job.toml"}
    tmp = _write(cfg, name, checked_files(toml, scripts), job_dir)
    exchange(tmp, job_dir)
    shutil.rmtree(tmp, ignore_errors=True)  # now the old job
    return jobs.load(cfg, name)


def current_files(cfg: Settings, name: str) -> dict[str, str]:
    """The job's job.toml and scripts as text (for the edit page and PUT's defaults)."""
    job_dir = existing_dir(cfg, name)
    files = {"job.toml": ""}
    toml = job_dir / "job.toml"
    if toml.is_file():
        files["job.toml"] = toml.read_text(errors="replace")
    for path in sorted(job_dir.glob("*.sh")):
        if path.is_file():
            files[path.name] = path.read_text(errors="replace")
    return files


def existing_dir(cfg: Settings, name: str) -> Path:
    """jobs/<name> of a job that exists (it may not load: then it can be fixed here); else 404."""
    jobs.check_name(name)
    job_dir = cfg.jobs_dir / name
    if name.startswith("_") or not job_dir.is_dir() or job_dir.is_symlink():
        raise UserError(f"no job {name!r} in {cfg.jobs_dir}", status=404)
    return job_dir


def exchange(a: Path, b: Path) -> None:
    """Swap two directories in one step where the kernel can (Linux 3.15+), else two renames."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(code, os.strerror(code), str(b))
    aside = b.with_name(f".old-{b.name}-{secrets.token_hex(4)}")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


_libc = ctypes.CDLL(None, use_errno=True)
