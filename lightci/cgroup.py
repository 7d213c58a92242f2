"""A job's `memory` limit for host builds, through the memory cgroup where the machine allows it.

Each stage gets a cgroup of its own (cgroup v2: memory.max under
/sys/fs/cgroup/lightci/; v1: memory.limit_in_bytes under
/sys/fs/cgroup/memory/lightci/). The stage's first process joins it before
exec, so everything it starts is inside: past the limit the kernel's OOM
killer ends the stage, not the VPS. Where lightci may not make cgroups (not
root, no delegation), the build log says so and the stage runs unlimited.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from lightci.config import parse_memory
from lightci.jobs import Job
from lightci.logs import BuildLog
from lightci.models import FAILED

ROOT = Path("/sys/fs/cgroup")


class MemoryLimit:
    """One stage's memory cgroup."""

    def __init__(self, path: Path, version: int, limit: str):
        self.path, self.version, self.limit = path, version, limit

    @classmethod
    def for_stage(cls, job: Job, build: Any, position: int, out: BuildLog) -> MemoryLimit | None:
        """The stage's cgroup, or None (no limit set, or none possible: the log says why)."""
        if not job.memory:
            return None
        name = f"build-{build.id}-{position}"
        try:
            made = cls._make(name, parse_memory(job.memory), job.memory)
        except OSError as exc:
            if position == 0:
                out.note(f"memory limit {job.memory} not applied: cannot make a cgroup ({exc})")
            return None
        if position == 0:
            out.note(f"memory limit {job.memory} through cgroup v{made.version} ({made.path})")
        return made

    @classmethod
    def _make(cls, name: str, limit: int, text: str) -> MemoryLimit:
        if "memory" in _read(ROOT / "cgroup.controllers").split():
            parent = ROOT / "lightci"
            parent.mkdir(exist_ok=True)
            if "memory" not in _read(parent / "cgroup.subtree_control").split():
                (parent / "cgroup.subtree_control").write_text("+memory")
            path = parent / name
            path.mkdir(exist_ok=True)
            (path / "memory.max").write_text(str(limit))
            _try_write(path / "memory.swap.max", "0")
            return cls(path, 2, text)
        if (ROOT / "memory" / "memory.limit_in_bytes").exists():
            path = ROOT / "memory" / "lightci" / name
            path.mkdir(parents=True, exist_ok=True)
            (path / "memory.limit_in_bytes").write_text(str(limit))
            _try_write(path / "memory.memsw.limit_in_bytes", str(limit))
            return cls(path, 1, text)
        raise OSError("this kernel has no memory cgroup mounted under /sys/fs/cgroup")

    @property
    def procs(self) -> Path:
        """The stage's process joins by writing its pid here, before its program runs
        (lightci.stageproc)."""
        return self.path / "cgroup.procs"

    def oom_kills(self) -> int:
        events = self.path / ("memory.events" if self.version == 2 else "memory.oom_control")
        for line in _read(events).splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def peak(self) -> int:
        """The most the stage's processes used together, in bytes (0 when the kernel
        does not say: cgroup v2 before Linux 5.19 has no memory.peak)."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        text = _read(self.path / name).strip()
        return int(text) if text.isdigit() else 0

    def close(self, watched: Any) -> None:
        """After the stage: an OOM kill fails the build; escaped processes die; the cgroup goes."""
        watched.memory_peak = max(watched.memory_peak, self.peak())
        if self.oom_kills() and not watched.kill_reason:
            watched.kill_status = FAILED
            watched.kill_reason = f"out of memory (limit {self.limit})"
        for _ in range(50):
            for pid in _read(self.path / "cgroup.procs").split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # still busy: the killed processes have not been reaped yet
                time.sleep(0.02)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _try_write(path: Path, value: str) -> None:
    """Optional knobs (swap accounting) that some kernels lack."""
    try:
        path.write_text(value)
    except OSError:
        pass
