"""Traced jobs: builds that record when they ran, so tests can check who overlapped whom.

Shared by tests/test_engine.py, test_crash.py and test_backends.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from tests.conftest import wait_until

# A stage that records when it ran, so tests can check who overlapped whom. With a
# GATE it holds until the test creates that file, else it naps.
RECORD = """
echo "$LIGHTCI_BUILD_ID $LIGHTCI_KEY start $(date +%s.%N)" >> "$TRACE"
if [ -n "${GATE:-}" ]; then
  while [ ! -e "$GATE" ]; do sleep 0.02; done
else
  sleep "${NAP:-0.3}"
fi
echo "$LIGHTCI_BUILD_ID $LIGHTCI_KEY end $(date +%s.%N)" >> "$TRACE"
"""


def traced_job(home, name="app", key="{branch}", nap="0.3", extra="", gate: Path | None = None):
    """A job whose build records its start and end; it naps, or holds until gate exists."""
    trace = home.path / "trace.txt"
    gate_path = gate or ""
    home.job(
        name,
        f"""
        key = "{key}"
        {extra}
        [params]
        flavor = "dev"
        [env]
        TRACE = "{trace}"
        NAP = "{nap}"
        GATE = "{gate_path}"
        """,
        build=RECORD,
    )
    return trace


def intervals(trace: Path) -> dict[int, dict]:
    runs: dict[int, dict] = {}
    for line in trace.read_text().splitlines():
        build_id, key, what, stamp = line.split()
        runs.setdefault(int(build_id), {"key": key})[what] = float(stamp)
    return runs


def max_concurrency(runs) -> int:
    events = sorted(
        itertools.chain.from_iterable(((r["start"], 1), (r["end"], -1)) for r in runs.values()),
        key=lambda e: (e[0], e[1]),
    )
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak


def overlaps(a, b) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def started(trace: Path) -> set[int]:
    return set(intervals(trace)) if trace.exists() else set()


def wait_started(trace: Path, ids, timeout: float = 60) -> None:
    """Until every build in ids has written its start line: its stage runs now."""
    wait_until(lambda: set(ids) <= started(trace), f"builds {list(ids)} to start", timeout)


def statuses(home) -> list[str]:
    return [r["status"] for r in home.builds()]
