"""Which home a process works on: --home, the one it chose, LIGHTCI_HOME, ./.lightci.

A leaf of its own, beside config: `lightci trigger` finds its home's control
socket with this alone, before it reads lightci.toml (lightci.cli.remote).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

_chosen_home: Path | None = None


def use_home(home: Path) -> None:
    """This process works on `home` (the CLI's --home), whatever LIGHTCI_HOME says."""
    global _chosen_home
    _chosen_home = home


def resolve_home(cli_home: str | os.PathLike | None = None) -> Path:
    """--home DIR > the home this process chose > LIGHTCI_HOME > ./.lightci, made absolute."""
    if cli_home is None and _chosen_home is not None:
        return _chosen_home
    raw = str(cli_home or os.environ.get("LIGHTCI_HOME") or ".lightci")
    return _resolved(raw, "" if os.path.isabs(raw) else os.getcwd())


@functools.lru_cache(maxsize=64)
def _resolved(raw: str, cwd: str) -> Path:
    """Resolving walks every path component; settings() asks many times a request."""
    return (Path(cwd) / Path(raw).expanduser()).resolve()
