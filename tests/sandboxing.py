"""What the hostile-build tests (tests/test_isolation*.py) share: secrets, bwrap, a build's
directory and its live processes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import Home

SECRET = "pr0d-deploy-key-7f3a9c"
TOKEN = "admin-token-5b1e8d2c4a6f"
HOOK_SECRET = "hook-secret-0c9d8e7f"


def bwrap_works() -> None:
    from lightci.sandbox import probe

    program = shutil.which("bwrap")
    if not program:
        pytest.skip("needs bubblewrap (Debian package bubblewrap; scripts/test installs it)")
    problem = probe(program)
    if problem:
        pytest.skip(f"bwrap cannot make a sandbox here: {problem}")


def wait_until(check, what: str, timeout: float = 60):
    deadline = time.time() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def build_dir(home: Home, build_id: int) -> Path:
    row = home.build(build_id)
    return home.path / "builds" / row["job"] / str(row["number"])


def live_processes_of(home: Home, build_id: int) -> list[int]:
    marker = str(build_dir(home, build_id) / "workspace")
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and (
                proc.environ().get("LIGHTCI_WORKSPACE") == marker
            ):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found
