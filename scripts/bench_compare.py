"""Side by side: lightci's cost at rest and per build, against the machine's floor (and Laminar).

Every figure of the performance issue in one run, as JSON, medians over
--runs interleaved rounds:

    floor          CPU to fork/exec `/bin/sh -c true` from Python (subprocess)
    cpu_per_build  CPU of the worker's whole process tree per no-op build, in a drain
    drain          500 queued no-ops, 6 slots: builds/s; both again with [builds]
                   sandbox = "none" (*_unsandboxed: on the host, as Laminar runs jobs)
    wakeup         queued_at -> the stage's first line: from a loaded process, from the CLI
    cli            `lightci trigger` against `python -c pass` (through the worker's control
                   socket; cli_trigger_direct_ms: the CLI queueing by itself, as with
                   no lightci running); `trigger --wait` of a no-op
    idle           `lightci worker` at rest when fresh (idle_fresh_worker_*) and after the
                   drain (idle_worker_*; --parts idle runs the drain too), then `lightci
                   serve` at rest with the repo's example jobs (jobs/) in the home
    logs           a stage printing N short lines against the same script writing to a file

With LAMINARD=/path/to/laminard (laminarc beside it, or LAMINARC=...) the same
jobs run on Laminar too, in the same rounds (alternating which goes first), as
laminar_* keys, with ratio_* = lightci / laminar on the medians:

    cpu_per_build  laminard's tree, same drain (EXECUTORS=0, queue, EXECUTORS=6)
    drain          builds/s of that drain
    wakeup_spawn   the CLI spawned -> the script's first line, both sides; Laminar
                   stamps queuedAt in whole seconds, so queued_at-based wake-ups
                   (wakeup_*_ms) have no Laminar counterpart
    cli            `laminarc queue noop` against `lightci trigger`,
                   `laminarc run noop` against `lightci trigger --wait`
    idle           laminard (one process) against serve + worker together
    logs           `laminarc run logs` wall (its db stamps are whole seconds too)

Nothing here is a pass/fail check.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_laminar import CpuGroup, laminar_round, median, ratios, status, tree_cpu

BIN = Path(sys.executable).parent
EXAMPLE_JOBS = Path(__file__).resolve().parent.parent / "jobs"


class Home:
    def __init__(self, path: Path, sandbox: str):
        self.path = path
        self.env = {**os.environ, "LIGHTCI_HOME": str(path), "PATH": f"{BIN}:{os.environ['PATH']}"}
        job = path / "jobs" / "noop"
        job.mkdir(parents=True)
        (job / "job.toml").write_text('key = "{branch}"\n')
        (job / "build.sh").write_text('#!/bin/sh\necho "started $(date +%s.%N)"\n')
        (job / "build.sh").chmod(0o755)
        logs = path / "jobs" / "logs"
        logs.mkdir()
        (logs / "build.sh").write_text('#!/bin/sh\nseq "$LINES"\n')
        (logs / "build.sh").chmod(0o755)
        (logs / "job.toml").write_text('[params]\nlines = "1000"\n')
        self.sandbox = sandbox
        self.configure(6)

    def configure(self, slots: int, sandbox: str = "") -> None:
        (self.path / "lightci.toml").write_text(
            f'[builds]\nslots = {slots}\nsandbox = "{sandbox or self.sandbox}"\n'
        )

    def start(self, *argv: str, cpu: CpuGroup | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(BIN / "lightci"), *argv],
            preexec_fn=cpu.join if cpu else None,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.path / "procs.log", "ab"),
            start_new_session=True,
        )
        deadline = time.time() + 30
        while not list((self.path / "run" / "wake").glob("*.fifo")) and argv[0] != "web":
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit(f"lightci {argv[0]} did not start")
            time.sleep(0.05)
        time.sleep(0.5)
        return proc

    def add_example_jobs(self) -> None:
        """The repo's example jobs beside the bench's own, as a new home has them."""
        for job in EXAMPLE_JOBS.iterdir():
            if not (self.path / "jobs" / job.name).exists():
                shutil.copytree(job, self.path / "jobs" / job.name, symlinks=True)

    def cli(self, *argv: str, direct: bool = False) -> tuple[float, str]:
        """Run `lightci ARGV`; direct: with a setting of its own, so it queues by itself."""
        env = {**self.env, "LIGHTCI_BUILDS_SANDBOX": self.sandbox} if direct else self.env
        started = time.perf_counter()
        out = subprocess.run([str(BIN / "lightci"), *argv], env=env, capture_output=True, text=True)
        return time.perf_counter() - started, out.stdout

    def row(self, build_id: int) -> dict:
        import sqlite3

        conn = sqlite3.connect(self.path / "lightci.db", timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return dict(conn.execute("SELECT * FROM build WHERE id = ?", (build_id,)).fetchone())
        finally:
            conn.close()

    def wait(self, ids: list[int], timeout: float = 600) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            rows = [self.row(i) for i in ids]
            if all(r["finished_at"] for r in rows):
                return rows
            if time.time() > deadline:
                raise SystemExit("builds did not finish")
            time.sleep(0.01)

    def first_line(self, row: dict) -> float:
        log = self.path / "builds" / row["job"] / str(row["number"]) / "log.txt"
        return float(log.read_text().split("started ", 1)[1].split()[0])


def floor_parent(n: int = 200) -> float:
    """The parent's share of the floor: subprocess's fork/exec/wait in this process."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        subprocess.run(["/bin/sh", "-c", "true"])
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = sum(
        (getattr(b, f) - getattr(a, f))
        for a, b in ((r0, r1), (c0, c1))
        for f in ("ru_utime", "ru_stime")
    )
    return spent / n * 1000


def one_round(tmp: Path, args) -> dict:
    from lightci import builds, models
    from lightci.config import settings
    from lightci.homes import use_home

    home = Home(tmp / "home", args.sandbox)
    use_home(home.path)
    cfg = settings(home.path)
    models.bind(cfg)
    out: dict = {"floor_ms": round(floor_parent(), 3)}
    cpu = CpuGroup("lightci-bench")
    out["cpu_source"] = cpu.source
    worker = home.start("worker", "--workers", "6", cpu=cpu)
    try:
        if "idle" in args.parts:
            # a worker that has run nothing yet
            out.update(idle(worker, args.idle_window, "idle_fresh_worker"))
        # wake-up from a loaded process (this one) and from the CLI, after a short idle
        loaded, cli, spawn = [], [], []
        for i in range(args.samples if "wakeup" in args.parts else 0):
            time.sleep(0.3)
            build = builds.trigger("noop", branch=f"w{i}")
            row = home.wait([build.id])[0]
            loaded.append((home.first_line(row) - row["queued_at"]) * 1000)
            time.sleep(0.3)
            spawned = time.time()
            _, stdout = home.cli("trigger", "noop", "--branch", f"c{i}")
            row = home.wait([int(stdout.split()[0])])[0]
            cli.append((home.first_line(row) - row["queued_at"]) * 1000)
            spawn.append((home.first_line(row) - spawned) * 1000)
        if loaded:
            out["wakeup_loaded_ms"] = median(loaded)
            out["wakeup_cli_ms"] = median(cli)
            out["wakeup_spawn_ms"] = median(spawn)
        # the CLI against a bare interpreter
        bare, trig, direct, waited, build_s = [], [], [], [], []
        for i in range(args.samples if "cli" in args.parts else 0):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"])
            bare.append(time.perf_counter() - t0)
            took, stdout = home.cli("trigger", "noop", "--branch", f"t{i}")
            trig.append(took)
            home.wait([int(stdout.split()[0])])
            took, stdout = home.cli("trigger", "noop", "--branch", f"u{i}", direct=True)
            direct.append(took)
            home.wait([int(stdout.split()[0])])
            took, stdout = home.cli("trigger", "noop", "--branch", f"v{i}", "--wait")
            waited.append(took)
            row = home.wait([int(stdout.split()[0])])[0]
            build_s.append(row["finished_at"] - row["queued_at"])
        if bare:
            out["python_pass_ms"] = round(median(bare) * 1000, 1)
            out["cli_trigger_ms"] = round(median(trig) * 1000, 1)
            out["cli_trigger_ratio"] = round(median(trig) / median(bare), 2)
            out["cli_trigger_direct_ms"] = round(median(direct) * 1000, 1)
            out["cli_wait_ms"] = round(median(waited) * 1000, 1)
            out["cli_wait_ratio"] = round(median(waited) / (median(trig) + median(build_s)), 2)
        if "drain" in args.parts or "idle" in args.parts:
            # drain: N queued no-ops, then released; CPU of the worker's whole tree. Then
            # the same on the host (sandbox "none"), the shape of Laminar's runs.
            for suffix, sandbox in (("", home.sandbox), ("_unsandboxed", "none")):
                rate, spent = drain(home, builds, worker, cpu, args.drain, sandbox)
                out[f"drain{suffix}_builds_per_s"] = round(rate, 1)
                out[f"cpu_per_build{suffix}_ms"] = round(spent * 1000, 2)
                out[f"cpu_per_build{suffix}_vs_floor"] = round(spent * 1000 / out["floor_ms"], 2)
        if "logs" in args.parts:
            # logs: N short lines through a stage, against the same script into a file
            lines = str(args.log_lines)
            t0 = time.perf_counter()
            with open(tmp / "direct.txt", "wb") as f:
                subprocess.run(["sh", "-c", 'seq "$LINES"'], env={"LINES": lines}, stdout=f)
            direct = time.perf_counter() - t0
            (home.path / "jobs" / "logs" / "job.toml").write_text(f'[env]\nLINES = "{lines}"\n')
            build = builds.trigger("logs", branch="logs2")
            row = home.wait([build.id])[0]
            out["logs_stage_s"] = round(row["finished_at"] - row["started_at"], 2)
            out["logs_file_s"] = round(direct, 2)
            out["logs_ratio"] = round(out["logs_stage_s"] / max(direct, 1e-3), 2)
        if "idle" in args.parts:
            # the same worker at rest after the drain
            out.update(idle(worker, args.idle_window, "idle_worker"))
    finally:
        worker.kill()
        worker.wait()
        cpu.remove()
    if "idle" not in args.parts:
        return out
    home.add_example_jobs()
    serve = home.start("serve", "--port", str(args.port))
    try:
        out.update(idle(serve, args.idle_window, "idle_serve"))
    finally:
        serve.kill()
        serve.wait()
    return out


def drain(home: Home, builds, worker, cpu: CpuGroup, n: int, sandbox: str) -> tuple[float, float]:
    """n no-ops queued with no slot, then 6 slots: (builds/s, CPU s per build)."""
    home.configure(0, sandbox)
    ids = [builds.trigger("noop", branch=f"d{sandbox}{i}").id for i in range(n)]
    cpu0 = cpu.seconds(worker.pid)
    home.configure(6, sandbox)
    started = time.time()
    builds.trigger("noop", branch=f"go{sandbox}")
    rows = home.wait(ids)
    elapsed = max(r["finished_at"] for r in rows) - started
    return n / elapsed, (cpu.seconds(worker.pid) - cpu0) / n


def idle(proc: subprocess.Popen, window: float, name: str) -> dict:
    """CPU share of proc's tree over `window` s from 2 s on, then its RSS and threads."""
    time.sleep(2)
    c0, t0 = tree_cpu(proc.pid), time.time()
    time.sleep(window)
    return {
        f"{name}_cpu_pct": round(100 * (tree_cpu(proc.pid) - c0) / (time.time() - t0), 3),
        f"{name}_rss_mb": round(status(proc.pid, "VmRSS") / 1024, 1),
        f"{name}_threads": status(proc.pid, "Threads"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--samples", type=int, default=7)
    p.add_argument("--drain", type=int, default=500)
    p.add_argument("--log-lines", type=int, default=5_000_000)
    # A minute: serve's clock turns once a minute at rest, so a shorter window
    # reads 0 or a whole turn depending on where it falls.
    p.add_argument("--idle-window", type=float, default=60.0)
    p.add_argument("--sandbox", default="auto", help="[builds] sandbox for the bench's builds")
    p.add_argument("--port", type=int, default=18977)
    p.add_argument(
        "--parts",
        type=lambda v: set(v.split(",")),
        default={"wakeup", "cli", "drain", "logs", "idle"},
        help="comma-separated subset of wakeup,cli,drain,logs,idle (lightci side only)",
    )
    args = p.parse_args()
    laminard = os.environ.get("LAMINARD")
    if laminard:
        laminarc = os.environ.get("LAMINARC") or str(Path(laminard).with_name("laminarc"))
    rounds = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="lightci-compare-") as tmp:
            if not laminard:
                rounds.append(one_round(Path(tmp), args))
            elif n % 2:
                theirs = laminar_round(Path(tmp), args, laminard, laminarc)
                rounds.append({**one_round(Path(tmp), args), **theirs})
            else:
                ours = one_round(Path(tmp), args)
                rounds.append({**ours, **laminar_round(Path(tmp), args, laminard, laminarc)})
        print(json.dumps({"round": n + 1, **rounds[-1]}), file=sys.stderr, flush=True)
    keys = rounds[0].keys()
    numbers = [k for k in keys if not isinstance(rounds[0][k], str)]
    summary = {k: median([r[k] for r in rounds if r.get(k) is not None]) for k in numbers}
    summary["cpu_source"] = rounds[0]["cpu_source"]
    summary["load_average"] = os.getloadavg()
    summary["cpus"] = os.cpu_count()
    if laminard:
        summary.update(ratios(summary))
        summary["laminar"] = laminard
    else:
        summary["laminar"] = "not measured: set LAMINARD=/path/to/laminard"
    print(json.dumps({"compare": summary, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
