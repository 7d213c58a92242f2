"""Admission by memory with real builds that hold real memory, the queue's reasons and
ETAs, and priorities, through real worker processes.

A "hog" stage holds MB megabytes (python3) until the test creates its gate file;
the worker's watchdog measures it (psutil RSS). The claim-level cases on a fixed
clock are in test_claims.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from subprocess import PIPE
from types import SimpleNamespace

from lightci import peaks
from tests.conftest import wait_until

MB = 1024**2
BUDGET = 800 * MB

HOG = """\
python3 -c '
import os, time
env = os.environ
hold = b"x" * (int(env["MB"]) << 20)
marks, build, branch = env["MARKS"], env["LIGHTCI_BUILD_ID"], env["LIGHTCI_BRANCH"]
open(marks + "/held-" + build, "w").close()
while not os.path.exists(marks + "/open-" + branch):
    time.sleep(0.05)
'
"""


def hog_job(home, name: str = "hog", extra: str = "") -> None:
    marks = home.path / "marks"
    marks.mkdir(exist_ok=True)
    toml = f'key = "{{branch}}"\nqueue_timeout = 600\n{extra}[params]\nmb = "300"\n'
    toml += f'[env]\nMARKS = "{marks}"\n'
    home.job(name, toml, build=HOG)


def status(home) -> dict:
    return json.loads(home.cli("status", "--json").stdout)


def running_within_budget(home) -> list[dict]:
    """The running builds, after checking that their expected peaks fit the budget together
    (or one runs alone), and so does the memory they were measured to hold."""
    running = status(home)["running"]
    expected = [home.build(b["id"])["memory_expected"] for b in running]
    assert len(running) <= 1 or sum(expected) <= BUDGET, (running, expected)
    measured = sum(b["memory_peak"] or 0 for b in running)
    assert len(running) <= 1 or measured <= BUDGET, running
    return running


def held(home, build_id: int) -> bool:
    """Its stage holds the memory, and the watchdog has measured most of it (the row is
    updated in steps of 32 MB while it runs)."""
    measured = home.build(build_id)["memory_peak"] or 0
    return (home.path / "marks" / f"held-{build_id}").exists() and measured > 260 * MB


def release_branch(home, branch: str) -> None:
    (home.path / "marks" / f"open-{branch}").touch()


def test_memory_budget_learned_peaks_and_a_build_bigger_than_the_budget(home):
    home.configure(slots=4, memory_budget="800M", memory_default="450M", orphan_after=3)
    hog_job(home)
    hog_job(home, "huge", 'memory = "1G"\n')
    home.start_worker(workers=4)
    first = home.trigger("hog", "--branch", "a")
    wait_until(lambda: held(home, first), "the first build of key a to hold its memory")
    release_branch(home, "a")
    (done,) = home.wait_for([first])
    assert done["status"] == "success", home.log(first)
    assert done["memory_peak"] > 260 * MB  # measured: the process tree's RSS
    (home.path / "marks" / "open-a").unlink()

    # Key a's learned ~310 MB and key b's 450 MB default fit 800 MB together;
    # two defaults (900 MB) would not. c's default does not fit beside them.
    a, b, c = (home.trigger("hog", "--branch", x) for x in "abc")
    wait_until(lambda: held(home, a) and held(home, b), "a and b to hold memory together")
    assert home.build(a)["memory_expected"] == done["memory_peak"]
    assert home.build(c)["status"] == "queued"
    (queued,) = [q for q in status(home)["queued"] if q["id"] == c]
    assert queued["waiting_for"].startswith("memory: needs ~0.4 GB, ")
    assert queued["waiting_for"].endswith(" GB free in the budget")
    assert len(running_within_budget(home)) == 2

    huge = home.trigger("huge", "--branch", "z")  # its memory (1G) exceeds the whole budget
    release_branch(home, "a")
    release_branch(home, "b")
    wait_until(lambda: held(home, c), "c to start once a and b ended")
    assert home.build(huge)["status"] == "queued"  # c was first; huge never runs beside it
    running_within_budget(home)
    release_branch(home, "c")
    home.wait_for([huge], states={"running"})
    later = home.trigger("hog", "--branch", "d")
    wait_until(lambda: held(home, huge), "the huge build to hold its memory")
    assert [b["id"] for b in running_within_budget(home)] == [huge]  # alone
    (waiting,) = status(home)["queued"]
    assert waiting["id"] == later and waiting["waiting_for"].startswith("memory: ")
    release_branch(home, "z")
    release_branch(home, "d")
    rows = home.wait_for([a, b, c, huge, later])
    assert {r["status"] for r in rows} == {"success"}
    assert rows[-1]["started_at"] >= rows[-2]["finished_at"]  # d waited for huge to end


def test_a_build_that_waited_past_starve_after_is_not_passed(home):
    home.configure(slots=4, memory_budget="800M", memory_default="300M", starve_after=0)
    hog_job(home)
    hog_job(home, "big", 'memory = "700M"\n')
    home.start_worker(workers=4)
    small = home.trigger("hog", "--branch", "s1")
    wait_until(lambda: home.build(small)["status"] == "running", "the small build to run")
    big = home.trigger("big", "--branch", "x")  # 700M does not fit beside 300M
    passer = home.trigger("hog", "--branch", "s2")  # 300M would fit beside s1...
    wait_until(
        lambda: any(q["id"] == passer for q in status(home)["queued"]), "the queue to show s2"
    )
    (why,) = [q["waiting_for"] for q in status(home)["queued"] if q["id"] == passer]
    assert "nothing passes it" in why  # ...but big has waited past starve_after
    assert home.build(passer)["status"] == "queued"
    release_branch(home, "s1")
    wait_until(lambda: home.build(big)["status"] == "running", "big to start")
    assert home.build(passer)["status"] == "queued"  # 700M + 300M: still no room
    release_branch(home, "x")
    release_branch(home, "s2")
    rows = home.wait_for([small, big, passer])
    assert [r["status"] for r in rows] == ["success"] * 3
    assert rows[2]["started_at"] >= rows[1]["finished_at"]


def test_queued_builds_start_within_a_quarter_of_their_eta(home):
    home.configure(slots=1)
    home.job("timed", 'key = "{branch}"\n', build="sleep 2\n")
    home.start_worker(workers=2)
    home.wait_for([home.trigger("timed", "--branch", "main")])  # learns main's duration
    ids = [home.trigger("timed", "--branch", "main") for _ in range(3)]
    asked = time.time()
    expected = {q["id"]: q["eta_start"] for q in status(home)["queued"]}
    rows = home.wait_for(ids)
    checked = 0
    for row in rows:
        if row["id"] not in expected:
            continue  # it started before the status was read
        eta = datetime.fromisoformat(expected[row["id"]].replace("Z", "+00:00")).timestamp()
        actual_wait = row["started_at"] - asked
        if actual_wait > 1:
            assert abs(eta - row["started_at"]) <= 0.25 * actual_wait, (row, eta, asked)
            checked += 1
    assert checked >= 1


def test_higher_priority_first_across_keys_first_come_inside_a_key(home):
    home.configure(slots=1)
    gate = home.path / "gate"
    home.job("gate", "", build=f"while [ ! -e {gate} ]; do sleep 0.05; done\n")
    home.job("app", 'key = "{branch}"\n', build="true\n")
    home.job("urgent", 'key = "{branch}"\npriority = 5\n', build="true\n")
    home.start_worker(workers=2)
    blocker = home.trigger("gate")
    home.wait_for([blocker], states={"running"})
    a1 = home.trigger("app", "--branch", "a")
    a2 = home.trigger("app", "--branch", "a", "-P", "9")  # cannot pass a1: same key
    b = home.trigger("app", "--branch", "b", "-P", "3")
    hot = home.trigger("urgent", "--branch", "x")  # the job's priority
    state = status(home)
    # listed in the claim's order, a2 behind a1 (its key's older build) whatever its priority
    assert [q["id"] for q in state["queued"]] == [hot, b, a1, a2]
    assert [q["position"] for q in state["queued"]] == [1, 2, 3, 4]
    assert {q["id"]: q["waiting_for"] for q in state["queued"]}[a2] == "key busy (#1)"
    shown = json.loads(home.cli("show", str(hot), "--json").stdout)
    assert shown["priority"] == 5 and shown["waiting_for"] == "slots 1/1"
    gate.touch()
    rows = home.wait_for([a1, a2, b, hot])
    order = [r["id"] for r in sorted(rows, key=lambda r: r["started_at"])]
    assert order == [hot, b, a1, a2]


def test_one_sample_measures_each_running_stage_by_its_own_process_tree(tmp_path):
    """The watchdog samples every stage it holds from one look at the process table."""
    ready = tmp_path / "ready"
    hog = (
        "import pathlib, sys, time\n"
        f"hold = b'x' * (120 << 20)\npathlib.Path({str(ready)!r}).touch()\nsys.stdin.read()\n"
    )
    # The hog is a grandchild: the stage's shell runs it, as a build script would.
    big = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0"; :', hog], stdin=PIPE)
    small = subprocess.Popen(["sleep", "60"])
    try:
        wait_until(ready.exists, "the hog to hold its memory", timeout=30)
        long_ago = time.monotonic() - peaks.MEASURE_AFTER
        held = [
            SimpleNamespace(proc=SimpleNamespace(pid=big.pid, started=long_ago), memory_peak=0),
            SimpleNamespace(
                proc=SimpleNamespace(pid=small.pid, started=long_ago), memory_peak=5 * MB
            ),
            SimpleNamespace(proc=None, memory_peak=7),  # between stages
            # too young to be measured (started "in a second": however slow this machine is)
            SimpleNamespace(
                proc=SimpleNamespace(pid=big.pid, started=time.monotonic() + 1), memory_peak=0
            ),
        ]
        peaks.sample(held)
        assert held[0].memory_peak > 120 * MB
        assert 5 * MB <= held[1].memory_peak < 60 * MB
        assert held[2].memory_peak == 7
        assert held[3].memory_peak == 0
    finally:
        big.kill()
        small.kill()
        big.wait()
        small.wait()


def test_a_small_running_build_shows_its_memory_peak_before_it_ends(home):
    """SPEC 11: a running build gains memory_peak once known, not only past 32 MB."""
    home.configure(slots=1)
    hog_job(home)
    (home.path / "jobs" / "hog" / "job.toml").write_text(
        (home.path / "jobs" / "hog" / "job.toml").read_text().replace('mb = "300"', 'mb = "1"')
    )
    home.start_worker()
    build_id = home.trigger("hog", "--branch", "small")
    wait_until(lambda: (home.path / "marks" / f"held-{build_id}").exists(), "the stage to run")
    wait_until(lambda: home.build(build_id)["memory_peak"], "a measured peak in the row")
    shown = json.loads(home.cli("show", str(build_id), "--json").stdout)
    assert shown["status"] == "running" and 0 < shown["memory_peak"] < 32 * MB
    release_branch(home, "small")
    assert home.wait_for([build_id])[0]["status"] == "success"
