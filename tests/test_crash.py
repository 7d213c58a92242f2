"""Crash-safety as a VPS lives it: workers SIGKILLed mid-build, everything killed and
restarted, systemd stopping a worker, and a soak of 200 builds under random kills.

Real `huey_consumer lightci.tasks.huey` processes, a real `lightci scheduler`,
real signals. Nothing here waits a fixed time for something to happen: every
wait is for a state, with a generous upper bound.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, FINAL, free_port, pid_alive, wait_for_file, wait_gone, wait_until
from tests.traces import RECORD, max_concurrency

HANG = """
if [ "${HANG_WHEN:-always}" = always ] || [ "$LIGHTCI_BUILD_NUMBER" = "$HANG_WHEN" ]; then
  ( sleep 600 & echo $! > "$PIDFILE.$LIGHTCI_BUILD_NUMBER"; wait ) &
  sleep 600
fi
echo "build $LIGHTCI_BUILD_NUMBER done"
"""


def hang_job(home, name="slow", hang_when="always", extra=""):
    pidfile = home.path / f"{name}.grandchild"
    home.job(
        name,
        f'{extra}\n[env]\nPIDFILE = "{pidfile}"\nHANG_WHEN = "{hang_when}"\n',
        build=HANG,
    )
    return pidfile


def leftovers(home) -> list[int]:
    """PIDs of processes still running in any build environment of this home."""
    marker = f"LIGHTCI_WORKSPACE={home.path}/builds/".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ.split(b"\0")) and pid_alive(
            int(entry.name)
        ):
            found.append(int(entry.name))
    return found


def wait_no_leftovers(home, timeout: float = 15) -> None:
    deadline = time.time() + timeout
    while leftovers(home) and time.time() < deadline:
        time.sleep(0.1)
    assert leftovers(home) == []


def sigkill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_a_sigkilled_worker_s_build_ends_lost_and_its_key_runs_on_the_survivor(home, scheduler):
    home.configure(orphan_after=30)
    pidfile = hang_job(home, hang_when="1")
    home.cli("jobs")  # the job table exists before the workers open it
    workers = [home.start_worker(), home.start_worker()]
    first = home.trigger("slow")
    second = home.trigger("slow")  # same key: waits for the first
    grandchild = int(wait_for_file(Path(f"{pidfile}.1")))
    holder = home.build(first)["pid"]
    victim = next(w for w in workers if w.pid == holder)
    survivor = next(w for w in workers if w is not victim)
    sigkill(victim)

    # Same host: the dead PID is noticed by the next sweep, not after orphan_after.
    row = home.wait_for([first], timeout=30 + 1 + 10)[0]
    assert row["status"] == "lost"
    assert row["error"] == f"worker {holder} on host {socket.gethostname()} died"
    assert wait_gone(grandchild), "the build's background grandchild survived"
    row = home.wait_for([second])[0]
    assert row["status"] == "success"
    assert row["pid"] == survivor.pid
    wait_no_leftovers(home)


def test_a_silent_worker_on_another_host_is_lost_after_orphan_after(home, scheduler):
    home.job("remote", build="true\n")
    home.configure(slots=0, orphan_after=5)  # nothing runs here; the rows play other hosts
    stale, fresh = home.trigger("remote", "--branch", "a"), home.trigger("remote", "--branch", "b")
    now = time.time()
    with home.db() as conn:
        for build_id, beat in ((stale, now - 60), (fresh, now + 3600)):
            conn.execute(
                "UPDATE build SET status = 'running', host = 'elsewhere', pid = 4711, "
                "started_at = ?, heartbeat_at = ? WHERE id = ?",
                (now - 60, beat, build_id),
            )
    row = home.wait_for([stale])[0]
    assert row["status"] == "lost"
    assert row["error"].startswith("worker 4711 on host elsewhere died (no heartbeat for ")
    # The same sweep saw the other one, whose heartbeat is fresh: it keeps running.
    assert home.build(fresh)["status"] == "running"
    home.cli("force-unlock", str(fresh))
    assert home.build(fresh)["status"] == "lost"


def test_kill_everything_and_start_again_runs_every_queued_build(home, scheduler):
    home.configure(slots=2, orphan_after=3600)  # only the start-up reconciliation can help
    pidfile = hang_job(home, hang_when="2")
    home.cli("jobs")  # the job table exists before the workers open it
    for _ in range(2):
        home.start_worker()
    ids = [home.trigger("slow", "--branch", f"b{i % 3}") for i in range(6)]
    wait_for_file(Path(f"{pidfile}.2"))
    hanging, waiting = ids[1], ids[4]  # #2 hangs; #5 has its key and waits
    home.wait_for([i for i in ids if i not in (hanging, waiting)])
    home.stop_all()  # SIGKILL every lightci process
    assert home.build(hanging)["status"] == "running"
    assert home.build(waiting)["status"] == "queued"

    home.start_worker()
    home.start_worker()
    rows = home.wait_for(ids)
    assert [r["status"] for r in rows] == [
        "success",
        "lost",
        "success",
        "success",
        "success",
        "success",
    ]
    assert home.build(hanging)["error"].endswith(" died")
    assert not [r for r in home.builds() if r["status"] not in FINAL]
    wait_no_leftovers(home)


def test_a_wedged_build_is_force_unlocked_and_its_key_is_free_again(home):
    pidfile = hang_job(home, hang_when="1")
    home.start_worker()
    first, second = home.trigger("slow"), home.trigger("slow")
    grandchild = int(wait_for_file(Path(f"{pidfile}.1")))
    out = home.cli("force-unlock", str(first)).stdout
    assert "ended lost: force-unlocked (worker " in out
    assert home.build(first)["status"] == "lost"
    assert wait_gone(grandchild)
    assert home.wait_for([second])[0]["status"] == "success"
    # The first build's worker wrote its own end to the log; the log's last word is the row's.
    wait_until(lambda: "had ended already" in home.log(first), "the log to say how it ended")
    assert (
        home.log(first)
        .splitlines()[-1]
        .startswith("[lightci] the build had ended already: lost (force-unlocked (worker ")
    )
    again = home.cli("force-unlock", str(first), check=False)
    assert again.returncode == 2 and "is not running: lost" in again.stderr
    assert home.cli("force-unlock", "--all").stdout.strip() == "nothing was running"


def test_a_force_unlocked_build_starts_no_stage_after_it_not_even_an_after_stage(home):
    """Its worker lives on: the killed stage ends, then it goes on to the `after` stage,
    which must not run (the build ended lost; the key may be someone else's already)."""
    ran = home.path / "report-ran"
    pidfile = hang_job(home, extra='after = ["report"]')
    (home.jobs / "slow" / "report.sh").write_text(f"#!/bin/sh\ntouch {ran}\n")
    (home.jobs / "slow" / "report.sh").chmod(0o755)
    home.start_worker()
    build = home.trigger("slow")
    grandchild = int(wait_for_file(Path(f"{pidfile}.1")))
    assert "ended lost: force-unlocked" in home.cli("force-unlock", str(build)).stdout
    assert wait_gone(grandchild)
    wait_until(lambda: "had ended already" in home.log(build), "its worker to let it go")
    log = home.log(build)
    assert "after stages failed: the build has ended (lost) elsewhere" in log, log
    assert not ran.exists()
    assert home.build(build)["status"] == "lost"


WAIT_FOR_GO = """
echo started > "$GO.started.$LIGHTCI_BUILD_NUMBER"
while [ ! -e "$GO" ]; do sleep 0.05; done
echo "finished within the grace"
"""


@pytest.mark.parametrize(
    "command, signum",
    [
        ("huey_consumer", signal.SIGTERM),
        ("huey_consumer", signal.SIGINT),
        ("lightci worker", signal.SIGTERM),
        ("lightci serve", signal.SIGTERM),
    ],
)
def test_a_stopped_worker_gives_builds_a_grace_then_ends_them_worker_stopped(home, command, signum):
    home.configure(slots=3, stop_grace=3)
    pidfile = hang_job(home)
    go = home.path / "go"
    home.job("short", f'[env]\nGO = "{go}"\n', build=WAIT_FOR_GO)
    argv = {
        "huey_consumer": [str(BIN / "huey_consumer"), "lightci.tasks.huey", "-k", "thread",
                          "-w", "3"],
        "lightci worker": [str(BIN / "lightci"), "worker", "--workers", "3"],
        "lightci serve": [str(BIN / "lightci"), "serve", "--workers", "3", "--port",
                          str(free_port())],
    }[command]  # fmt: skip
    worker = home.start_worker(*argv)
    slow, short = home.trigger("slow"), home.trigger("short")
    grandchild = int(wait_for_file(Path(f"{pidfile}.1")))
    wait_for_file(Path(f"{go}.started.1"))

    worker.send_signal(signum)
    go.write_text("go\n")  # the short build ends within the grace and frees a thread
    late = home.trigger("short")  # after the signal: nobody may claim it
    assert worker.wait(30) == 0

    assert home.build(short)["status"] == "success"
    row = home.build(slow)
    assert (row["status"], row["error"]) == ("cancelled", "worker stopped")
    assert home.build(late)["status"] == "queued"
    assert wait_gone(grandchild)
    wait_no_leftovers(home)


def test_a_second_signal_cuts_the_grace_short(home):
    home.configure(stop_grace=3600)
    pidfile = hang_job(home)
    worker = home.start_worker()
    slow = home.trigger("slow")
    wait_for_file(Path(f"{pidfile}.1"))
    worker.send_signal(signal.SIGTERM)
    wait_for_file(home.path / "worker-0.log")
    deadline = time.time() + 30
    while "Received SIGTERM" not in (home.path / "worker-0.log").read_text():
        assert time.time() < deadline
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    row = home.build(slow)
    assert (row["status"], row["error"]) == ("cancelled", "worker stopped")
    wait_no_leftovers(home)


# -- the soak ---------------------------------------------------------------------

TRIGGER_MANY = """
import sys, time
from lightci import builds, models
from lightci.config import settings
models.bind(settings())
count, keys = int(sys.argv[1]), int(sys.argv[2])
for i in range(count):
    build = builds.trigger("soak", branch=f"key{i % keys}")
    print(build.id, flush=True)
    if i % 10 == 9:
        time.sleep(0.05)
"""


def trace_intervals(trace: Path, rows: dict[int, dict]) -> dict[int, dict]:
    """Build id -> {key, start, end}; a lost build's end is when it was ended (and killed)."""
    runs: dict[int, dict] = {}
    starts: dict[int, int] = {}
    for line in trace.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[2] not in ("start", "end"):
            continue  # a line cut short by a SIGKILL
        build_id = int(parts[0])
        if parts[2] == "start":
            starts[build_id] = starts.get(build_id, 0) + 1
        runs.setdefault(build_id, {"key": parts[1]})[parts[2]] = float(parts[3])
    assert all(n == 1 for n in starts.values()), "a build ran twice"
    for build_id, run in runs.items():
        run.setdefault("end", rows[build_id]["finished_at"])
    return runs


def test_soak_200_builds_while_random_workers_are_sigkilled(home, scheduler):
    slots, keys, total = 3, 5, 200
    home.configure(slots=slots, orphan_after=30)
    trace = home.path / "trace.txt"
    home.job("soak", f'[env]\nTRACE = "{trace}"\nNAP = "0.1"\n', build=RECORD)
    rng = random.Random(4711)
    home.cli("jobs")  # the job table exists before the workers open it
    workers = [home.start_worker(workers=3) for _ in range(3)]
    trigger = subprocess.Popen(
        [sys.executable, "-c", TRIGGER_MANY, str(total), str(keys)],
        env=home.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    kills = 0
    deadline = time.time() + 150
    while True:
        rows = home.builds()
        if len(rows) == total and all(r["status"] in FINAL for r in rows):
            break
        assert time.time() < deadline, "the soak did not settle"
        holders = {r["pid"] for r in rows if r["status"] == "running"}
        if kills < 10 and holders & {w.pid for w in workers}:
            victim = rng.choice([w for w in workers if w.pid in holders])
            sigkill(victim)
            workers.remove(victim)
            workers.append(home.start_worker(workers=3))
            kills += 1
        time.sleep(rng.uniform(0.3, 1.0))
    trigger_out, _ = trigger.communicate(timeout=30)
    assert len(trigger_out.split()) == total

    rows = {r["id"]: r for r in home.builds()}
    assert len(rows) == total
    assert {r["status"] for r in rows.values()} <= {"success", "lost"}
    assert all(r["finished_at"] for r in rows.values())
    assert any(r["status"] == "lost" for r in rows.values()), "no kill hit a running build"
    runs = trace_intervals(trace, rows)
    for a, b in itertools.combinations(runs.values(), 2):
        if a["key"] == b["key"]:
            assert a["end"] <= b["start"] or b["end"] <= a["start"], "same-key builds overlapped"
    assert max_concurrency(runs) <= slots
    assert not [r for r in home.builds() if r["status"] in ("running", "deploying")]
    wait_no_leftovers(home)
