"""Upkeep as an operator meets it: queue expiry, re-dispatch, retention with keep_last,
the disk warning, `lightci monitor` and `lightci status`, and the scheduler's job registry.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from lightci import UserError
from tests.conftest import REPO, wait_until

DAY = 86400


def test_a_build_queued_longer_than_its_queue_timeout_ends_expired(home, scheduler):
    home.configure(slots=0)
    home.job("waits", "queue_timeout = 1\n", build="true\n")
    home.job("patient", "", build="true\n")
    late, patient = home.trigger("waits"), home.trigger("patient")
    row = home.wait_for([late])[0]
    assert (row["status"], row["error"]) == ("expired", "waited longer than queue_timeout (1 s)")
    assert home.build(patient)["status"] == "queued"  # 600 s to go
    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(30) == 0


def test_a_queued_build_nobody_woke_is_re_dispatched_by_the_sweep(home, scheduler):
    home.configure(slots=0)
    home.job("hello", "", build="echo hi\n")
    home.start_worker()
    build_id = home.trigger("hello")
    wait_until(lambda: home.pending_wakeups() == 0, "the wake-up to be consumed")
    # More slots, and no trigger to wake anyone: only the sweep knows the build could run.
    home.configure(slots=2)
    assert home.wait_for([build_id])[0]["status"] == "success"


def test_the_sweep_removes_leases_and_wake_pipes_that_outlived_their_process(home, scheduler):
    home.job("hello", "", build="echo hi\n")
    home.start_worker()
    build_id = home.trigger("hello")
    home.wait_for([build_id])
    gone = subprocess.Popen(["true"])
    gone.wait()
    pipe = home.path / "run" / "wake" / f"{socket.gethostname()}-{gone.pid}.fifo"
    os.mkfifo(pipe)
    wait_until(lambda: not pipe.exists(), "the dead process's wake-up pipe to go")
    wait_until(lambda: home.build(build_id)["pgid"] is None, "the ended build's pgid to go")
    assert list(pipe.parent.glob("*.fifo"))  # the live worker's pipe stays


def _age(home, days: float, ids=None) -> None:
    shift = days * DAY
    where = f"WHERE id IN ({','.join(map(str, ids))})" if ids else ""
    with home.db() as conn:
        conn.execute(
            "UPDATE build SET queued_at = queued_at - ?, started_at = started_at - ?, "
            f"finished_at = finished_at - ? {where}",
            (shift, shift, shift),
        )


def _backdate(path, days: float) -> None:
    old = time.time() - days * DAY
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (old, old), follow_symlinks=False)
    os.utime(path, (old, old))


def test_retention_removes_old_builds_but_keeps_the_newest_of_every_job(home):
    home.configure(keep_last=2, retention_days=7)
    home.job(
        "app",
        'cache = "key"\n',
        build='head -c 20000 /dev/urandom > blob; head -c 20000 /dev/urandom > "$XDG_CACHE_HOME.b"',
    )
    home.job("lib", "", build="head -c 20000 /dev/urandom > blob\n")
    home.start_worker()
    app = [home.trigger("app", "--branch", b) for b in ("main", "dev", "main", "main", "main")]
    lib = [home.trigger("lib") for _ in range(3)]
    assert {r["status"] for r in home.wait_for(app + lib)} == {"success"}
    home.configure(keep_last=2, retention_days=7, slots=0)
    waiting = home.trigger("app", "--branch", "main")  # not final: never removed
    home.stop_all()
    _age(home, 10)
    for cache in (home.path / "caches" / "app").iterdir():
        _backdate(cache, 10)
    rowless = home.path / "builds" / "app" / "99"
    rowless.mkdir(parents=True)
    rowless.joinpath("log.txt").write_text("left behind by a crash\n")
    _backdate(rowless, 10)

    dry = json.loads(home.cli("cleanup", "--dry-run", "--json").stdout)
    doomed = {b["id"] for b in dry["builds"]}
    assert doomed == set(app[:3] + lib[:1])  # app keeps #4, #5 (the waiting #6 is extra)
    assert [d["path"] for d in dry["dirs"]] == [str(rowless)]
    assert len(dry["caches"]) == 1 and "dev" in dry["caches"][0]["path"]
    assert dry["bytes"] >= 3 * 20000
    assert len(home.builds()) == 9 and rowless.exists()  # a dry run removes nothing
    text = home.cli("cleanup", "--dry-run").stdout
    assert f"would remove build {app[0]} (app #1, success)" in text
    assert "keeping the newest 2 per job" in text

    assert json.loads(home.cli("cleanup", "--days", "30", "--json").stdout)["builds"] == []
    home.cli("cleanup")
    left = {r["id"] for r in home.builds()}
    assert left == {app[3], app[4], waiting, lib[1], lib[2]}
    builds_dir = home.path / "builds"
    assert sorted(p.name for p in (builds_dir / "app").iterdir()) == ["4", "5"]
    assert sorted(p.name for p in (builds_dir / "lib").iterdir()) == ["2", "3"]
    caches = [p.name for p in (home.path / "caches" / "app").iterdir()]
    assert len(caches) == 1 and caches[0].startswith("main")  # the waiting build's key


def test_cleanup_rejects_bad_days_with_a_clear_message(home):
    result = home.cli("cleanup", "--days", "-1", check=False)
    assert result.returncode == 2
    assert "days must be a number of days (0 or more)" in result.stderr


def test_monitor_shows_sizes_disk_free_and_warnings(home):
    blob = "head -c 50000 /dev/zero > blob\n"
    home.job("hello", "", build=blob)
    home.start_worker()
    done = home.trigger("hello")
    home.wait_for([done])
    home.stop_all()  # a worker's sweep would end the late build expired before monitor looks
    home.job("hello", "queue_timeout = 1\n", build=blob)  # only now: a slow start is no expiry
    home.configure(slots=0)
    with home.path.joinpath("lightci.toml").open("a") as f:
        f.write(f"disk_warn_mb = {2**40}\n")  # [upkeep]: more than any disk has
    late = home.trigger("hello")
    wait_until(lambda: time.time() > home.build(late)["queued_at"] + 1.2, "queue_timeout")
    out = home.cli("monitor").stdout
    assert "hello" in out and "disk" in out and "free of" in out
    assert "WARNING: low disk:" in out
    assert "WARNING: 1 queued build(s) past their queue_timeout" in out
    report = json.loads(home.cli("monitor", "--json").stdout)
    assert report["jobs"][0]["bytes"] >= 50000 and report["disk"]["low"] is True
    one = json.loads(home.cli("monitor", str(done), "--json").stdout)
    assert one["bytes"] >= 50000 and one["log_bytes"] > 0 and one["exists"]
    assert "no build 999" in home.cli("monitor", "999", check=False).stderr


def test_status_shows_the_worker_pid_and_heartbeat_age_of_running_builds(home):
    home.job("slow", "", build="sleep 600\n")
    home.start_worker()
    build_id = home.trigger("slow")
    row = home.wait_for([build_id], states={"running"})[0]
    out = home.cli("status").stdout
    assert f"pid {row['pid']} on " in out and "heartbeat " in out
    home.cli("force-unlock", "--all")
    assert home.build(build_id)["status"] == "lost"


# -- the registry, in-process -----------------------------------------------------


def test_the_scheduler_runs_every_upkeep_job_it_was_given_and_one_added_later(schedulers):
    from lightci import scheduler as upkeep
    from lightci.schedule import every

    scheduler = upkeep.start()
    schedulers.append(scheduler)
    assert {
        "lightci.recovery.sweep",
        "lightci.retention.retention",
        "lightci.retention.check_disk",
        "lightci.healthchecks.check_due",
    } <= scheduler.ids()
    ran = threading.Event()

    def health_check() -> None:
        ran.set()

    scheduler.add(every(0.2, health_check))
    assert ran.wait(30), "a job added to a running scheduler never ran"


def test_nothing_is_scheduled_by_importing_a_module():
    """Registration is explicit: the scheduler's list, not import side effects."""
    code = (
        "import lightci.deploy, lightci.container, lightci.recovery, lightci.retention;"
        "import apscheduler.schedulers.background as b, sys;"
        "print('lightci.schedule' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_retention_runs_daily_at_the_configured_local_time(bound, home):
    from lightci import retention
    from lightci import scheduler as upkeep
    from lightci.config import settings
    from lightci.schedule import UpkeepJob, checked, next_daily

    home.path.joinpath("lightci.toml").write_text('[upkeep]\nretention_at = "04:30"\n')
    job = next(j for j in upkeep.upkeep_jobs() if j.func is retention.retention)
    assert checked(job, settings()) == (4, 30)
    now = time.time()
    fire = datetime.fromtimestamp(next_daily((4, 30), now)).astimezone()
    assert (fire.hour, fire.minute) == (4, 30)
    assert now < fire.timestamp() <= now + 25 * 3600
    bad = UpkeepJob(retention.retention, at="25:00")
    with pytest.raises(UserError, match="expected a time HH:MM"):
        checked(bad, settings())


def test_a_daily_time_is_found_across_a_month_end_and_a_dst_change():
    """Local time as the C library keeps it (TZ: Berlin's rule, spelled out so that no
    zoneinfo file is needed): the spring day has 23 hours, the autumn day 25."""
    code = (
        "import time; from lightci.schedule import next_daily;"
        "t = lambda *d: time.mktime((*d, 0, 0, -1));"
        "f = lambda s: time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(s));"
        "print(f(next_daily((4, 30), t(2026, 1, 31, 5, 0, 0))));"  # past today's: tomorrow
        "print(f(next_daily((4, 30), t(2026, 1, 31, 4, 0, 0))));"  # still to come today
        "h = lambda *d: (next_daily((4, 30), t(*d)) - t(*d)) / 3600;"
        "print(h(2026, 3, 28, 4, 30, 0)); print(h(2026, 10, 24, 4, 30, 0));"
        "print(f(next_daily((2, 30), t(2026, 3, 29, 0, 0, 0))))"  # a time the change skips
    )
    env = {**os.environ, "TZ": "CET-1CEST,M3.5.0,M10.5.0/3"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    lines = out.stdout.split("\n")
    assert lines[:4] == ["2026-02-01 04:30 CET", "2026-01-31 04:30 CET", "23.0", "25.0"]
    assert lines[4].startswith("2026-03-29 0")  # 01:30 CET or 03:30 CEST: that day, once


# -- shipping ---------------------------------------------------------------------


def test_the_zipapp_runs_on_a_python_with_nothing_installed(home, tmp_path):
    """scripts/build-pyz: one file that a bare Python 3.11 runs as init, worker and CLI."""
    pytest.importorskip("shiv")
    pyz = tmp_path / "lightci.pyz"
    subprocess.run(
        [str(REPO / "scripts" / "build-pyz"), str(pyz)], cwd=REPO, check=True,
        capture_output=True, timeout=600,
    )  # fmt: skip
    bare = Path(sys.base_prefix) / "bin" / "python3"
    env = {**home.env, "PATH": "/usr/bin:/bin", "SHIV_ROOT": str(tmp_path / "shiv")}

    def pyz_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bare), str(pyz), *args], env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip

    assert pyz_run("init", str(home.path)).returncode == 0
    assert (home.jobs / "hello" / "job.toml").exists()  # the example jobs travel inside
    worker = subprocess.Popen([str(bare), str(pyz), "worker"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    home.procs.append(worker)
    waited = pyz_run("trigger", "hello", "--wait")
    assert waited.returncode == 0, waited.stderr
    assert "hello #1: success" in waited.stderr
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0


def test_a_daily_job_runs_once_at_start_too(schedulers):
    """README: each upkeep job runs once at start; a home never up at retention_at
    still gets its retention."""
    from lightci.schedule import Scheduler, daily

    ran = threading.Event()
    scheduler = Scheduler([daily("upkeep.retention_at", ran.set)]).start()
    schedulers.append(scheduler)
    assert ran.wait(30), "the daily job did not run at start"
    job_id = f"{threading.Event.__module__}.{threading.Event.set.__qualname__}"
    wait_until(lambda: scheduler.waits()[job_id] is not None, "the daily job's first wait")
    # then it sleeps until its time, looking at the clock at least hourly
    assert 1 <= scheduler.waits()[job_id] <= 3600


def test_a_daily_job_whose_clock_was_set_back_finds_its_next_time_again():
    """Set back days (a wrong clock at boot, put right), a daily job does not wait the
    days over again: its next time is recomputed."""
    from lightci.schedule import Pacer, daily

    ran, now = [], [time.time()]
    step = Pacer(daily("04:30", lambda: ran.append(1)), first=False)._daily(
        (4, 30), clock=lambda: now[0]
    )
    due = step()
    assert ran == [] and 0 < due - now[0] <= 25 * 3600
    now[0] -= 10 * 86400
    due = step()
    assert ran == [] and 0 < due - now[0] <= 25 * 3600
    now[0] = due  # its time comes
    step()
    assert ran == [1]


def test_a_daily_job_added_later_waits_for_its_time(schedulers):
    """Added to a running scheduler (or rescheduled by a changed setting), a daily job
    does not run at once: only a scheduler's start catches up a missed day."""
    from lightci.schedule import Scheduler, daily

    ran = []
    scheduler = Scheduler([]).start()
    schedulers.append(scheduler)
    in_two_hours = time.strftime("%H:%M", time.localtime(time.time() + 7200))
    scheduler.add(daily(in_two_hours, lambda: ran.append(1)))
    name = next(iter(scheduler.waits()))
    wait_until(lambda: scheduler.waits()[name] is not None, "the daily job's first look")
    assert scheduler.waits()[name] == 3600 and ran == []
