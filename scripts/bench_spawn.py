"""What starting one stage costs: sh (how lightci started stages) against subprocess (how it
does now), bare and inside bubblewrap.

Measured from a process as small as could be (`python -S`, sh imported): the
stage helper lightci kept while stages went through sh. Each way runs
`/bin/true` --runs times, stdin /dev/null, output to /dev/null, in a session of
its own, with the options lightci used (sh) or uses (popen, lightci.stageproc).
CPU in ms per start: the
measuring process's own (parent_ms) and everything it started too (total_ms,
from a cpuacct cgroup as in `bench compare`: the processes in bubblewrap's PID
namespace count; without a cgroup, only the waited-for ones). The fork/exec
floor of the performance issue is `popen` bare. Prints JSON; nothing here is a
pass/fail check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import sh
from bench_laminar import CpuGroup

from lightci.sandbox import Sandbox

MEASURE = r"""
import json, os, resource, subprocess, sys
import sh

way, prefix, runs = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
argv = prefix + ["/bin/true"]
nothing = os.open(os.devnull, os.O_RDONLY)
out = os.open(os.devnull, os.O_WRONLY)


def start():
    if way == "sh":
        sh.Command(argv[0])(*argv[1:], _in=nothing, _out=out, _err_to_out=True, _bg=True,
                            _bg_exc=False, _new_session=True, _tty_out=False).wait()
    else:
        subprocess.Popen(argv, stdin=nothing, stdout=out, stderr=out,
                         start_new_session=True).wait()


start()  # warm
print("ready", flush=True)
sys.stdin.readline()
before = resource.getrusage(resource.RUSAGE_SELF)
for _ in range(runs):
    start()
after = resource.getrusage(resource.RUSAGE_SELF)
print((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / runs * 1000)
"""


def bwrap_prefix(tmp: Path) -> list[str]:
    """The sandbox lightci's stages run in (lightci.sandbox), for a throwaway home and build."""
    home = tmp / "home"
    dirs = SimpleNamespace(
        **{name: home / "builds" / "job" / "1" / name for name in ("workspace", "home", "tmp")},
        artifacts=home / "builds" / "job" / "1" / "artifacts",
        cache=home / "caches" / "job" / "_job",
    )
    for path in vars(dirs).values():
        path.mkdir(parents=True)
    cfg = SimpleNamespace(home=home, jobs_dir=home / "jobs")
    return Sandbox(shutil.which("bwrap") or "bwrap").argv(
        cfg, SimpleNamespace(name="job"), dirs, []
    )


def measure(way: str, prefix: list[str], runs: int) -> dict:
    """CPU per start: the measuring process's own, and all (a cgroup's, when one can be made)."""
    roots = {str(Path(sh.__file__).parent.parent)}
    cpu = CpuGroup("lightci-spawn")
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", MEASURE, way, json.dumps(prefix), str(runs)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(roots)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=cpu.join,
    )
    try:
        proc.stdout.readline()  # warmed up
        before = cpu.seconds(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        parent = float(proc.stdout.readline())
        total = (cpu.seconds(proc.pid) - before) / runs * 1000
    finally:
        proc.stdin.close()
        proc.wait()
        cpu.remove()
    return {"parent_ms": round(parent, 2), "total_ms": round(total, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=300)
    args = p.parse_args()
    probe = CpuGroup("lightci-spawn")
    out: dict = {"cpu_source": probe.source}
    probe.remove()
    out["bare"] = {way: measure(way, [], args.runs) for way in ("sh", "popen")}
    if shutil.which("bwrap"):
        with tempfile.TemporaryDirectory(prefix="lightci-spawn-") as tmp:
            prefix = bwrap_prefix(Path(tmp))
            out["bwrap"] = {way: measure(way, prefix, args.runs) for way in ("sh", "popen")}
    out["sh_over_popen_ms"] = round(
        out["bare"]["sh"]["total_ms"] - out["bare"]["popen"]["total_ms"], 2
    )
    print(json.dumps({"spawn": out}, indent=2))


if __name__ == "__main__":
    main()
