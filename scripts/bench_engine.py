"""Engine benchmark: wake-up latency, no-op build end to end, drain rate, idle cost.

Runs the Procfile's worker line (`lightci worker`) against a fresh home in a
temp dir and prints JSON. Reference on these machines: Laminar runs a no-op
end to end in ~9 ms and drains ~170 runs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
LAMINAR = {"noop_ms": 9.0, "runs_per_s": 170.0}


def setup(home: Path, slots: int) -> None:
    (home / "jobs" / "noop").mkdir(parents=True, exist_ok=True)
    (home / "jobs" / "noop" / "job.toml").write_text('key = "{branch}"\n')
    stage = home / "jobs" / "noop" / "build.sh"
    stage.write_text('#!/bin/sh\necho "started $(date +%s.%N)"\n')
    stage.chmod(0o755)
    configure(home, slots)


def configure(home: Path, slots: int) -> None:
    (home / "lightci.toml").write_text(f"[builds]\nslots = {slots}\n")


def start_worker(home: Path, workers: int | None = None) -> subprocess.Popen:
    argv = [str(BIN / "lightci"), "worker"] + (["--workers", str(workers)] if workers else [])
    env = {**os.environ, "LIGHTCI_HOME": str(home)}
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "worker.log", "ab"),
        start_new_session=True,
    )
    time.sleep(1.5)  # import and bind the wake-up pipe
    return proc


def wait_final(ids: list[int], timeout: float = 300) -> list:
    from lightci.models import FINAL, Build, db

    deadline = time.time() + timeout
    with db.connection_context():
        while True:
            rows = list(Build.select().where(Build.id.in_(ids)))
            if all(r.status in FINAL for r in rows):
                return rows
            if time.time() > deadline:
                raise SystemExit("builds did not finish in time")
            time.sleep(0.002)


def script_start(home: Path, build) -> float:
    log = (home / "builds" / build.job / str(build.number) / "log.txt").read_text()
    return float(log.split("started ", 1)[1].split()[0])


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench(home: Path, args) -> dict:
    from lightci import builds, models
    from lightci.config import settings

    os.environ["LIGHTCI_HOME"] = str(home)
    setup(home, slots=2)
    models.bind(settings(home))
    worker = start_worker(home)
    result: dict = {}
    try:
        # (a) wake-up: trigger committed -> script running, after the workers sat idle.
        wake = {}
        for idle in args.idle:
            samples = []
            for _ in range(args.wake_samples):
                time.sleep(idle)
                build = builds.trigger("noop", branch="wake")
                row = wait_final([build.id])[0]
                samples.append((script_start(home, row) - row.queued_at) * 1000)
            wake[f"after_{idle}s_idle"] = {
                "p50_ms": round(statistics.median(samples), 2),
                "max_ms": round(max(samples), 2),
                "n": len(samples),
            }
        result["wakeup_latency"] = wake

        # (b) a no-op build end to end: trigger committed -> final state committed.
        e2e = []
        for _ in range(args.noop):
            build = builds.trigger("noop", branch="noop")
            row = wait_final([build.id])[0]
            e2e.append((row.finished_at - row.queued_at) * 1000)
        result["noop_build"] = {
            "median_ms": round(statistics.median(e2e), 2),
            "p90_ms": round(pct(e2e, 0.9), 2),
            "n": len(e2e),
            "vs_laminar": round(statistics.median(e2e) / LAMINAR["noop_ms"], 2),
        }

        # (c) drain: N builds queued at once (workers paused by slots = 0), then released.
        drains = {}
        for slots in args.slots:
            worker.kill()
            worker.wait()
            configure(home, 0)
            worker = start_worker(home, workers=max(4, slots))
            ids = [builds.trigger("noop", branch=f"d{slots}-{i}").id for i in range(args.drain)]
            configure(home, slots)
            started = time.time()
            builds.trigger("noop", branch="go")  # commits one more row and rings the bell
            rows = wait_final(ids)
            elapsed = max(r.finished_at for r in rows) - started
            ok = sum(r.status == "success" for r in rows)
            drains[f"slots_{slots}"] = {
                "builds": len(ids),
                "succeeded": ok,
                "seconds": round(elapsed, 2),
                "builds_per_s": round(len(ids) / elapsed, 1),
                "vs_laminar": round(len(ids) / elapsed / LAMINAR["runs_per_s"], 2),
            }
        result["drain"] = drains

        # (d) an idle worker: CPU share and RSS over a quiet window.
        time.sleep(2)
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        before, t0 = cpu(), time.time()
        time.sleep(args.idle_window)
        used, span = cpu() - before, time.time() - t0
        rss = next(
            line
            for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS")
        )
        result["idle_worker"] = {
            "cpu_percent": round(100 * used / span, 3),
            "rss_mb": round(int(rss.split()[1]) / 1024, 1),
            "window_s": round(span, 1),
        }
    finally:
        worker.kill()
        worker.wait()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--idle",
        type=float,
        nargs="+",
        default=[0.5, 12.0],
        help="idle seconds before each wake-up sample (12 s > Huey's 10 s back-off)",
    )
    p.add_argument("--wake-samples", type=int, default=5)
    p.add_argument("--noop", type=int, default=30)
    p.add_argument("--drain", type=int, default=500)
    p.add_argument("--slots", type=int, nargs="+", default=[6, 2])
    p.add_argument("--idle-window", type=float, default=20.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lightci-bench-") as tmp:
        print(json.dumps({"engine": bench(Path(tmp), args)}, indent=2))


if __name__ == "__main__":
    main()
