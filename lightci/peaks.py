"""A running build's memory, measured: the RSS of each stage's whole process tree.

The worker's watchdog calls ``sample`` every tick (0.2 s) for the builds it
holds; the highest value is the build's ``memory_peak`` unless the stage's
memory cgroup reports a peak of its own (lightci.cgroup). lightci.admission
writes it to the row and learns the key's expected peak from it.
"""

from __future__ import annotations

from typing import Any

import psutil


def tree_rss(pid: int) -> int:
    """Resident memory of a process and everything under it, in bytes (0 once gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def sample(held: list[Any]) -> None:
    """Raise each running stage's measured peak to its tree's RSS now."""
    for watched in held:
        proc = watched.proc
        if proc is not None:
            watched.memory_peak = max(watched.memory_peak, tree_rss(proc.pid))
