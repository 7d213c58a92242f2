"""A running build's memory, measured: the RSS of each stage's whole process tree.

The worker's watchdog calls ``sample`` every tick (0.2 s) for the builds it
holds, once a stage has run for MEASURE_AFTER; the highest value is the
build's ``memory_peak`` unless the stage's memory cgroup reports a peak of its
own (lightci.cgroup). lightci.admission writes it to the row and learns the
key's expected peak from it.

Finding a process's children means reading every process's parent: one look
at the process table serves all the stages of a tick (psutil's children()
looks again for each one, 1 to 3 ms a stage on a small VPS).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

# Seconds a stage runs before it is measured: a look at the process table costs
# ~2.5 ms, more than a stage this short costs itself, and its memory is gone
# before any claim could use the number.
MEASURE_AFTER = 0.2


def children_by_parent() -> dict[int, list[int]]:
    """{parent pid: its children's pids} of every process on the host (psutil: macOS too)."""
    import psutil  # loaded by the first stage measured, not by a worker at rest

    children: dict[int, list[int]] = defaultdict(list)
    for proc in psutil.process_iter(["ppid"]):
        children[proc.info["ppid"]].append(proc.pid)
    return children


def tree_rss(pid: int, children: dict[int, list[int]]) -> int:
    """Resident memory of a process and everything under it, in bytes (0 once gone)."""
    import psutil

    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += psutil.Process(current).memory_info().rss
        except psutil.Error:
            continue
        pending.extend(children.get(current, ()))
    return total


def sample(held: list[Any]) -> None:
    """Raise the measured peak of each stage running for MEASURE_AFTER s to its tree's RSS now."""
    since = time.monotonic() - MEASURE_AFTER
    running = [(w, w.proc) for w in held if w.proc is not None and w.proc.started <= since]
    if not running:
        return
    children = children_by_parent()
    for watched, proc in running:
        watched.memory_peak = max(watched.memory_peak, tree_rss(proc.pid, children))
