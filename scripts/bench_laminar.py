"""The Laminar side of scripts/bench_compare.py: a throwaway LAMINAR_HOME and its laminard,
one round of the same jobs on it, and the lightci / laminar ratios; with the /proc
readings both sides use. bench_compare.py imports it (this directory is on sys.path
when a script in it runs).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import time
import zlib
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def median(values):
    return round(statistics.median(values), 3) if values else None


def tree_cpu(pid: int) -> float:
    """utime + stime of a process, its waited-for children and its live descendants, in s.

    A live child (a running stage, a server's worker) is in nobody's cutime until it is reaped.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # it ended between the parent's look and ours
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / TICKS
    children = set()
    for task in tasks:
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return own + sum(tree_cpu(child) for child in children)


class CpuGroup:
    """A cgroup a daemon starts in: the CPU of every process below it, however re-parented.

    bwrap's processes inside its PID namespace are nobody's waited-for children,
    so tree_cpu (utime + cutime) misses a sandboxed stage's CPU; a cgroup
    counts every process started in it. Where none can be made (not root, no
    cpuacct), `seconds` falls back to tree_cpu and `source` says so.
    """

    def __init__(self, name: str):
        self.path, self.usage = None, ""
        for base, usage in (
            ("/sys/fs/cgroup/cpuacct", "cpuacct.usage"),
            ("/sys/fs/cgroup", "cpu.stat"),
        ):
            path = Path(base) / f"{name}-{os.getpid()}"
            try:
                path.mkdir()
            except OSError:
                continue
            if (path / usage).exists():
                self.path, self.usage = path, usage
                break
            path.rmdir()
        self.source = f"cgroup {self.path}" if self.path else "process tree (no cgroup)"

    def join(self) -> None:
        """preexec_fn: the new process, and all it will start, count here."""
        if self.path:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self, pid: int) -> float:
        if not self.path:
            return tree_cpu(pid)
        text = (self.path / self.usage).read_text()
        if self.usage == "cpuacct.usage":
            return int(text) / 1e9
        return int(text.split("usage_usec", 1)[1].split()[0]) / 1e6

    def remove(self) -> None:
        for _ in range(50):  # its last processes may still be exiting
            try:
                if self.path:
                    self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class LaminarHome:
    """A throwaway LAMINAR_HOME with the same two jobs, and its laminard."""

    def __init__(self, path: Path, laminard: str, laminarc: str, http_port: int):
        self.path, self.laminard, self.laminarc = path, laminard, laminarc
        self.stuck, self.last = 0, 0.0
        self.env = {
            **os.environ,
            "LAMINAR_HOME": str(path),
            "LAMINAR_BIND_RPC": f"unix:{path / 'rpc.sock'}",
            "LAMINAR_BIND_HTTP": f"127.0.0.1:{http_port}",
        }
        jobs = path / "cfg" / "jobs"
        jobs.mkdir(parents=True)
        (path / "cfg" / "contexts").mkdir()
        (jobs / "noop.run").write_text("#!/bin/sh\necho started $(date +%s.%N)\n")
        (jobs / "logs.run").write_text('#!/bin/sh\nseq "$LINES"\n')
        for script in jobs.iterdir():
            script.chmod(0o755)
        self.configure(6)

    def configure(self, executors: int) -> None:
        """laminard rereads cfg/contexts on inotify and dequeues what it now can."""
        (self.path / "cfg" / "contexts" / "default.conf").write_text(f"EXECUTORS={executors}\n")

    def start(self, cpu: CpuGroup) -> subprocess.Popen:
        proc = subprocess.Popen(
            [self.laminard],
            preexec_fn=cpu.join,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.path / "laminard.log", "ab"),
            start_new_session=True,
        )
        deadline = time.time() + 30
        while not (self.path / "rpc.sock").exists():
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("laminard did not start")
            time.sleep(0.05)
        time.sleep(0.5)
        return proc

    def cli(self, *argv: str, timeout: float = 60) -> tuple[float | None, str]:
        """Wall and stdout; (None, "") if the run it waits for got lost (see wait)."""
        started = time.perf_counter()
        try:
            out = subprocess.run(
                [self.laminarc, *argv],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            self.stuck += 1
            return None, ""
        if out.returncode:
            raise SystemExit(f"laminarc {' '.join(argv[:2])}: {out.stderr.strip()}")
        return time.perf_counter() - started, out.stdout

    def queue(self, job: str, *params: str) -> int:
        """`laminarc queue JOB`: the build number it printed ("noop:12")."""
        return int(self.cli("queue", job, *params)[1].split(":")[-1])

    def rows(self, job: str, numbers: list[int]) -> list[dict]:
        import sqlite3

        conn = sqlite3.connect(self.path / "laminar.sqlite", timeout=30)
        conn.row_factory = sqlite3.Row
        conn.text_factory = bytes  # a long log is zlib in a TEXT column
        try:
            marks = ",".join("?" * len(numbers))
            query = f"SELECT * FROM builds WHERE name = ? AND number IN ({marks})"
            return [dict(r) for r in conn.execute(query, (job, *numbers))]
        finally:
            conn.close()

    def wait(self, job: str, numbers: list[int], stall: float = 15) -> list[dict]:
        """The finished rows, once all are, or once none has finished for `stall` s.

        Now and then laminard (this version, on this busy machine) loses a run: its
        leader is gone, the run stays "running" for good and holds an executor.
        Those are left behind and counted in self.stuck; self.last is when the
        last of the others was seen finished.
        """
        done, progress = 0, time.time()
        while True:
            rows = self.rows(job, numbers)
            finished = [r for r in rows if r["completedAt"]]
            if len(finished) > done:
                done, progress = len(finished), time.time()
            self.last = progress
            if len(finished) == len(numbers):
                return finished
            if time.time() - progress > stall:
                self.stuck += len(numbers) - len(finished)
                return finished
            time.sleep(0.01)

    def first_line(self, row: dict) -> float:
        """The run's log is in builds.output, zlib-compressed from 1024 bytes on."""
        log = row["output"]
        if row["outputLen"] >= 1024:
            log = zlib.decompress(log)
        return float(log.split(b"started ", 1)[1].split()[0])


def laminar_round(tmp: Path, args, laminard: str, laminarc: str) -> dict:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        http_port = free.getsockname()[1]
    home = LaminarHome(tmp / "laminar", laminard, laminarc, http_port)
    out: dict = {}
    cpu = CpuGroup("laminar-bench")
    daemon = home.start(cpu)
    try:
        # wake-up: laminarc spawned -> the script's first line
        spawn = []
        for _ in range(args.samples):
            time.sleep(0.3)
            spawned = time.time()
            for row in home.wait("noop", [home.queue("noop")]):
                spawn.append((home.first_line(row) - spawned) * 1000)
        out["laminar_wakeup_spawn_ms"] = median(spawn)
        # the CLI: queue (returns once queued), run (returns once finished)
        queued, ran = [], []
        for _ in range(args.samples):
            took, stdout = home.cli("queue", "noop")
            queued.append(took)
            home.wait("noop", [int(stdout.split(":")[-1])])
            took, _ = home.cli("run", "noop", timeout=30)
            if took is not None:
                ran.append(took)
        out["laminar_cli_queue_ms"] = round(median(queued) * 1000, 1)
        out["laminar_cli_run_ms"] = round(median(ran) * 1000, 1)
        # drain: no executors, N queued no-ops, then 6 executors; laminard's whole tree
        home.configure(0)
        time.sleep(1)  # the inotify reload
        numbers = []
        for batch in range(0, args.drain, 50):
            _, stdout = home.cli("queue", *["noop"] * min(50, args.drain - batch))
            numbers += [int(line.split(":")[-1]) for line in stdout.split()]
        cpu0 = cpu.seconds(daemon.pid)
        started = time.time()
        home.configure(6)
        drained = len(home.wait("noop", numbers))
        spent = cpu.seconds(daemon.pid) - cpu0
        out["laminar_drain_builds_per_s"] = round(drained / (home.last - started), 1)
        out["laminar_drain_finished"] = drained  # of args.drain; the rest lost or blocked
        out["laminar_cpu_per_build_ms"] = round(spent / drained * 1000, 2)
        # logs: N short lines, `laminarc run` wall (the db's stamps are whole seconds)
        took, _ = home.cli("run", "logs", f"LINES={args.log_lines}", timeout=600)
        out["laminar_logs_run_s"] = round(took, 2) if took is not None else None
        # idle laminard
        time.sleep(2)
        c0, t0 = tree_cpu(daemon.pid), time.time()
        time.sleep(args.idle_window)
        spent = tree_cpu(daemon.pid) - c0
        out["laminar_idle_cpu_pct"] = round(100 * spent / (time.time() - t0), 3)
        out["laminar_idle_rss_mb"] = round(status(daemon.pid, "VmRSS") / 1024, 1)
        out["laminar_idle_threads"] = status(daemon.pid, "Threads")
        out["laminar_stuck_runs"] = home.stuck
    finally:
        os.killpg(daemon.pid, 15)  # laminard and any leader of a stuck run
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, 9)
            daemon.wait()
        cpu.remove()
    return out


# ratio_<name> = lightci / laminar, on the medians; a tuple of lightci keys is summed
RATIOS = {
    "cpu_per_build": ("cpu_per_build_ms", "laminar_cpu_per_build_ms"),
    "drain": ("drain_builds_per_s", "laminar_drain_builds_per_s"),
    "cpu_per_build_unsandboxed": ("cpu_per_build_unsandboxed_ms", "laminar_cpu_per_build_ms"),
    "drain_unsandboxed": ("drain_unsandboxed_builds_per_s", "laminar_drain_builds_per_s"),
    "wakeup_spawn": ("wakeup_spawn_ms", "laminar_wakeup_spawn_ms"),
    "cli_queue": ("cli_trigger_ms", "laminar_cli_queue_ms"),
    "cli_run": ("cli_wait_ms", "laminar_cli_run_ms"),
    "logs": ("logs_stage_s", "laminar_logs_run_s"),
    "idle_cpu": (("idle_worker_cpu_pct", "idle_serve_cpu_pct"), "laminar_idle_cpu_pct"),
    "idle_rss": (("idle_worker_rss_mb", "idle_serve_rss_mb"), "laminar_idle_rss_mb"),
    "idle_threads": (("idle_worker_threads", "idle_serve_threads"), "laminar_idle_threads"),
}


def ratios(summary: dict) -> dict:
    out = {}
    for name, (ours, theirs) in RATIOS.items():
        keys = ours if isinstance(ours, tuple) else (ours,)
        ours = None if None in (summary.get(k) for k in keys) else sum(summary[k] for k in keys)
        out[f"ratio_{name}"] = (
            round(ours / summary[theirs], 2) if ours and summary.get(theirs) else None
        )
    return out
