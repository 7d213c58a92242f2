"""The home a command works on, and `lightci init`."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import peewee

from lightci import models
from lightci.config import CONFIG_TEMPLATE, Settings, settings
from lightci.errors import UserError
from lightci.homes import resolve_home, use_home


def choose(args) -> Path:
    """The home this process works on: --home, else LIGHTCI_HOME, else ./.lightci."""
    home = resolve_home(args.home)
    use_home(home)
    return home


# A home the operating system or the database refuses: one line, not a traceback.
REFUSALS = (OSError, sqlite3.OperationalError, peewee.OperationalError)
# What a command ends with as one line and exit code 2 (see failed).
FAILURES = (UserError, *REFUSALS)


def failed(exc: BaseException, err) -> int:
    """A command's user error, or its home refused: one line on `err`, exit code 2."""
    print(f"lightci: {exc if isinstance(exc, UserError) else why(exc)}", file=err, flush=True)
    return 2


def ready(args) -> Settings:
    """The chosen home's settings, with the job table bound. A home that is not there is
    an error, not a new empty one, for a command that looks at it or acts on it: a
    mistyped --home must not look like a healthy server. A server makes its home."""
    home = choose(args)
    if not home.exists() and not getattr(args, "server", False):
        raise UserError(f"no lightci home at {home}: make one with `lightci init {home}`")
    try:
        cfg = settings(home)
        models.bind(cfg)
    except (OSError, sqlite3.Error, peewee.OperationalError) as exc:
        raise UserError(f"cannot use the lightci home {home}: {why(exc)}") from None
    return cfg


def close() -> None:
    """A command's end: its connection closes as at Python's own exit (the last one
    to close checkpoints the WAL and removes the -wal and -shm files)."""
    if models.db.obj is not None:
        models.db.close()


def why(exc: Exception) -> str:
    """An operating system's or database's refusal in one line."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def example_jobs() -> Path:
    """The example jobs: the source checkout's jobs/, else the installed copy."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "jobs",
        Path(sys.prefix) / "share" / "lightci" / "jobs",
        Path(__file__).resolve().parents[2] / "share" / "lightci" / "jobs",  # zipapp (shiv)
    ):
        if (candidate / "hello").is_dir():
            return candidate
    raise UserError("the example jobs are not installed (expected share/lightci/jobs)")


def init(args) -> int:
    home = Path(args.dir or choose(args)).expanduser().resolve()
    try:
        _make_home(home)
    except OSError as exc:
        raise UserError(f"cannot make a lightci home in {home}: {why(exc)}") from None
    print(f"lightci home ready at {home}")
    print(f"  export LIGHTCI_HOME={home}")
    print("  lightci serve          # web, worker and scheduler in one process")
    print("  lightci trigger hello --wait")
    return 0


def _make_home(home: Path) -> None:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # token, secrets, logs: lightci's own
    config = home / "lightci.toml"
    if not config.exists():
        config.touch(mode=0o600)  # it will hold the token and the webhook secret
        config.write_text(CONFIG_TEMPLATE)
    jobs_dir = home / "jobs"
    jobs_dir.mkdir(exist_ok=True)
    for example in sorted(example_jobs().iterdir()):
        if example.is_dir() and not (jobs_dir / example.name).exists():
            shutil.copytree(example, jobs_dir / example.name)
    for sub in ("builds", "caches"):
        (home / sub).mkdir(exist_ok=True)
