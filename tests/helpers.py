"""Plain helpers the fixtures and tests share: where things are, and waiting for a state.

tests/conftest.py imports them, so `from tests.conftest import ...` keeps working.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FINAL = {"success", "failed", "cancelled", "timeout", "expired", "lost"}


# -- waiting for a state, never for a time ------------------------------------------


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_for_file(path: Path, timeout: float = 30) -> str:
    """The text of a file a build writes, once it has some."""
    wait_until(lambda: path.exists() and path.read_text().strip(), f"{path} to appear", timeout)
    return path.read_text().strip()


def pid_alive(pid: int) -> bool:
    """Not a zombie either: a SIGKILLed child of init is dead before it is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 15) -> bool:
    """True once pid is dead; a SIGKILL takes effect when the process next runs."""
    deadline = time.time() + timeout
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
