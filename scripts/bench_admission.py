"""Admission benchmark: one mixed workload under slots-only and memory admission.

Big builds hold BIG MB for a few seconds, small ones SMALL MB for one; several
keys of each. The budget fits two big builds. Three runs on fresh homes, each
after a warm-up build per key (so memory admission has learned the peaks):

    slots_for_big     slots = 2, no memory budget: safe, but small builds queue for nothing
    slots_for_small   slots = 6, no memory budget: fast, but exceeds the budget
    memory            slots = 6, memory_budget = the budget

Prints JSON: makespan, the most memory measured to run at once (the sum of the
memory_peak of builds whose runs overlap), and the longest queue wait.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench_engine import start_worker, wait_final

STAGE = """#!/bin/sh
exec python3 -c '
import os, time
hold = b"x" * (int(os.environ["MB"]) << 20)
time.sleep(float(os.environ["SECONDS_HELD"]))
'
"""


def setup(home: Path, args, slots: int, budget: str) -> None:
    for name, mb, seconds in (("big", args.big, args.big_seconds), ("small", args.small, 1)):
        job = home / "jobs" / name
        job.mkdir(parents=True, exist_ok=True)
        job.joinpath("job.toml").write_text(
            f'key = "{{branch}}"\nqueue_timeout = 3600\n'
            f'[env]\nMB = "{mb}"\nSECONDS_HELD = "{seconds}"\n'
        )
        job.joinpath("build.sh").write_text(STAGE)
        job.joinpath("build.sh").chmod(0o755)
    (home / "lightci.toml").write_text(
        f'[builds]\nslots = {slots}\nmemory_budget = "{budget}"\nmemory_default = "{args.big}M"\n'
        f'starve_after = {args.starve_after}\nsandbox = "none"\norphan_after = 3\n'
    )


def workload(args) -> list[tuple[str, str]]:
    """(job, branch): big and small builds interleaved, several keys of each."""
    bigs = [("big", f"b{i % args.big_keys}") for i in range(args.big_builds)]
    smalls = [("small", f"s{i % args.small_keys}") for i in range(args.small_builds)]
    mixed = []
    while bigs or smalls:
        if bigs:
            mixed.append(bigs.pop(0))
        mixed.extend(smalls[:2])
        del smalls[:2]
    return mixed


def peak_together(rows) -> int:
    """The most memory that ran at once: at each start, the peaks of the builds running then."""
    most = 0
    for row in rows:
        t = row.started_at
        most = max(
            most,
            sum(r.memory_peak or 0 for r in rows if r.started_at <= t < r.finished_at),
        )
    return most


def run(mode: str, slots: int, budget: str, args) -> dict:
    from lightci import builds, models
    from lightci.config import settings

    with tempfile.TemporaryDirectory(prefix="lightci-bench-") as tmp:
        home = Path(tmp)
        os.environ["LIGHTCI_HOME"] = str(home)
        setup(home, args, slots, budget)
        models.bind(settings(home))
        worker = start_worker(home, workers=8)
        try:
            keys = sorted(set(workload(args)))
            wait_final([builds.trigger(job, branch=branch).id for job, branch in keys])
            ids = [builds.trigger(job, branch=branch).id for job, branch in workload(args)]
            rows = wait_final(ids)
        finally:
            worker.kill()
            worker.wait()
    mb = 1024**2
    return {
        "mode": mode,
        "slots": slots,
        "memory_budget": budget or "off",
        "builds": len(rows),
        "succeeded": sum(r.status == "success" for r in rows),
        "makespan_s": round(max(r.finished_at for r in rows) - min(r.queued_at for r in rows), 2),
        "peak_memory_mb": round(peak_together(rows) / mb),
        "longest_wait_s": round(max(r.started_at - r.queued_at for r in rows), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--big", type=int, default=500, help="MB a big build holds")
    p.add_argument("--small", type=int, default=100, help="MB a small build holds")
    p.add_argument("--big-seconds", type=float, default=3)
    p.add_argument("--big-builds", type=int, default=6)
    p.add_argument("--big-keys", type=int, default=3)
    p.add_argument("--small-builds", type=int, default=12)
    p.add_argument("--small-keys", type=int, default=4)
    p.add_argument(
        "--starve-after",
        type=int,
        default=10,
        help="seconds small builds may pass a big one waiting for memory",
    )
    args = p.parse_args()
    budget = f"{2 * args.big + args.big // 2}M"  # two big builds fit, three do not
    results = [
        run("slots_for_big", 2, "", args),
        run("slots_for_small", 6, "", args),
        run("memory", 6, budget, args),
    ]
    summary = {"budget": budget, "starve_after": args.starve_after, "runs": results}
    print(json.dumps({"admission": summary}, indent=2))


if __name__ == "__main__":
    main()
