"""The build engine as users live it: keys, slots, FIFO, supersede.

Every scenario runs real `huey_consumer lightci.tasks.huey` processes on one
SQLite home, triggered through the real `lightci` command. Where an ordering
matters, builds wait on a gate file the test opens once it has seen the state
it wants (two running, one queued): a busy machine only makes them slower.
Timeouts, cancels and isolation are in test_engine_processes.py; job settings,
repos and the CLI in test_engine_jobs.py.
"""

from __future__ import annotations

import itertools
import sqlite3

import pytest

from tests.conftest import wait_until
from tests.traces import intervals, max_concurrency, overlaps, statuses, traced_job, wait_started


def test_two_builds_of_the_same_key_run_one_after_the_other(home):
    gate = home.path / "gate"
    trace = traced_job(home, key="{flavor}_{branch}", gate=gate)
    home.start_worker()
    home.start_worker()
    ids = [home.trigger("app", "--branch", "main") for _ in range(3)]
    wait_started(trace, ids[:1])
    assert statuses(home) == ["running", "queued", "queued"]  # idle workers, but one key
    gate.touch()
    rows = home.wait_for(ids)
    assert [r["status"] for r in rows] == ["success"] * 3
    runs = intervals(trace)
    for a, b in itertools.combinations(ids, 2):
        assert not overlaps(runs[a], runs[b]), f"builds {a} and {b} of one key overlapped"
    # FIFO: they started in the order they were queued.
    assert sorted(ids, key=lambda i: runs[i]["start"]) == ids


def test_different_keys_run_in_parallel(home):
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    home.start_worker()
    home.start_worker()
    ids = [home.trigger("app", "--branch", b) for b in ("main", "develop")]
    wait_started(trace, ids)  # both at once: neither ends before the gate opens
    gate.touch()
    assert [r["status"] for r in home.wait_for(ids)] == ["success"] * 2
    runs = intervals(trace)
    assert overlaps(runs[ids[0]], runs[ids[1]])


def test_slots_1_serialises_everything(home):
    home.configure(slots=1)
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    home.start_worker()
    home.start_worker()
    ids = [home.trigger("app", "--branch", f"b{i}") for i in range(4)]
    wait_started(trace, ids[:1])
    assert statuses(home) == ["running", "queued", "queued", "queued"]
    gate.touch()
    assert {r["status"] for r in home.wait_for(ids)} == {"success"}
    assert max_concurrency(intervals(trace)) == 1


def test_slots_2_runs_two_and_the_third_waits(home):
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    home.start_worker(workers=3)
    home.start_worker(workers=3)
    ids = [home.trigger("app", "--branch", f"b{i}") for i in range(3)]
    wait_started(trace, ids[:2])
    state = home.cli("status", "--json").stdout
    assert '"slots_used": 2' in state
    assert statuses(home) == ["running", "running", "queued"]
    gate.touch()
    home.wait_for(ids)
    runs = intervals(trace)
    assert max_concurrency(runs) == 2
    assert runs[ids[2]]["start"] >= min(runs[ids[0]]["end"], runs[ids[1]]["end"])


def test_raising_slots_in_lightci_toml_applies_without_a_restart(home):
    home.configure(slots=0)  # paused
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    home.start_worker(workers=3)
    ids = [home.trigger("app", "--branch", f"b{i}") for i in range(3)]
    wait_until(lambda: home.pending_wakeups() == 0, "the workers to take the wake-ups")
    assert statuses(home) == ["queued"] * 3
    home.configure(slots=3)
    home.trigger("app", "--branch", "wake-up")  # any trigger wakes the workers
    wait_started(trace, ids)
    gate.touch()
    home.wait_for(ids)
    assert max_concurrency({i: r for i, r in intervals(trace).items() if i in ids}) == 3


def test_fifo_within_a_key_with_many_workers(home):
    home.configure(slots=4)
    gate = home.path / "gate"
    trace = traced_job(home, gate=gate)
    for _ in range(2):
        home.start_worker(workers=3)
    ids = [home.trigger("app", "--branch", "main") for _ in range(8)]
    wait_started(trace, ids[:1])  # the other seven queue up behind the first
    gate.touch()
    home.wait_for(ids)
    runs = intervals(trace)
    assert sorted(ids, key=lambda i: runs[i]["start"]) == ids


def test_the_database_itself_refuses_two_running_builds_of_one_key(home):
    home.job("hello", build="true\n")
    a, b = home.trigger("hello"), home.trigger("hello")
    with home.db() as conn:
        conn.execute("UPDATE build SET status = 'running' WHERE id = ?", (a,))
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE build SET status = 'running' WHERE id = ?", (b,))


def test_supersede_running_cancels_older_builds_of_the_key(home):
    home.job("ci", 'supersede = "running"\n', build="sleep 30\n")
    home.start_worker()
    first = home.trigger("ci", "--branch", "feature")
    home.wait_for([first], states={"running"})
    second = home.trigger("ci", "--branch", "feature")
    third = home.trigger("ci", "--branch", "feature")
    rows = home.wait_for([first, second])
    assert rows[0]["status"] == "cancelled" and rows[0]["error"] == "superseded by #2"
    assert rows[1]["status"] == "cancelled" and rows[1]["error"] == "superseded by #3"
    home.wait_for([third], states={"running"})
    home.cli("cancel", str(third))
    home.wait_for([third])


def test_supersede_none_keeps_every_build_of_a_key(home):
    gate = home.path / "gate"
    home.job("deploy", "", build=f'while [ ! -e "{gate}" ]; do sleep 0.02; done\n')
    home.start_worker()
    first = home.trigger("deploy")
    home.wait_for([first], states={"running"})
    ids = [first] + [home.trigger("deploy") for _ in range(2)]  # they arrive while it runs
    gate.touch()
    assert [r["status"] for r in home.wait_for(ids)] == ["success"] * 3
