"""After stages, artifacts, badges and schedules: what a build leaves and when one starts itself."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from lightci import jobs
from lightci.config import settings
from tests.conftest import BIN, wait_until

DAY = 86400


def test_after_stages_artifacts_and_badges_of_a_failed_and_a_cancelled_build(home, serve, tmp_path):
    gate = tmp_path / "gate"
    home.job(
        "app",
        'after = ["report"]\nartifacts = ["out/*.apk"]\nstages = ["build"]\n'
        f'[params]\nWAIT = "no"\n[env]\nGATE = "{gate}"\n',
        build="""\
            mkdir -p out "$LIGHTCI_ARTIFACTS/notes"
            echo apk-bytes > out/app.apk
            echo not-kept > out/app.txt
            echo hello > "$LIGHTCI_ARTIFACTS/notes/readme.txt"
            ln -s /etc/passwd "$LIGHTCI_ARTIFACTS/passwd"
            while [ "${WAIT:-}" = yes ] && [ ! -f "$GATE" ]; do sleep 0.05; done
            exit 1
            """,
        report='echo "report sees result=$LIGHTCI_RESULT"\n',
    )
    server = serve()
    failed = home.trigger("app", "--branch", "main")
    assert home.wait_for([failed])[0]["status"] == "failed"
    log = home.log(failed)
    assert "report sees result=failed" in log and "the build's result stays failed" in log

    listed = server.get(f"/api/builds/{failed}/artifacts").json()
    assert listed == [{"path": "notes/readme.txt", "size": 6}, {"path": "out/app.apk", "size": 10}]
    got = server.get(f"/builds/{failed}/artifacts/out/app.apk")
    assert got.status == 200 and got.body == b"apk-bytes\n"
    assert got.headers["content-disposition"].startswith('attachment; filename="app.apk"')
    # A download that broke off resumes where it stopped (bottle's static_file did that).
    part = server.get(f"/builds/{failed}/artifacts/out/app.apk", headers={"Range": "bytes=4-"})
    assert part.status == 206 and part.body == b"bytes\n"
    assert part.headers["content-range"] == "bytes 4-9/10"
    past = server.get(f"/builds/{failed}/artifacts/out/app.apk", headers={"Range": "bytes=99-"})
    assert past.status == 416 and past.headers["content-range"] == "bytes */10"
    for bad in ("passwd", "../log.txt", "out/../../log.txt", "out/app.txt", "%2e%2e/log.txt"):
        assert server.get(f"/builds/{failed}/artifacts/{bad}").status == 404, bad
    page = server.get(f"/builds/{failed}").text
    assert f'href="/builds/{failed}/artifacts/out/app.apk"' in page and "passwd" not in page

    badge = server.get("/badge/app.svg")
    assert badge.status == 200 and badge.headers["content-type"].startswith("image/svg+xml")
    assert "app: failed" in badge.text
    assert "app: unknown" in server.get("/badge/app.svg?branch=other").text
    assert server.get("/badge/nope.svg").status == 404

    waiting = home.trigger("app", "-p", "WAIT=yes")
    home.wait_for([waiting], states={"running"})
    assert server.post(f"/api/builds/{waiting}/cancel").status == 200
    assert home.wait_for([waiting])[0]["status"] == "cancelled"
    assert "report sees result=cancelled" in home.log(waiting)
    assert "app: cancelled" in server.get("/badge/app.svg").text


def test_a_schedule_missed_while_lightci_was_down_runs_once(bound, home):
    from lightci import cron

    home.job(
        "nightly",
        'schedule = ["0 3 * * *"]\n[params]\nflavor = "dev"\n'
        '[[schedules]]\ncron = "30 4 * * *"\nbranch = "main"\nparams = { flavor = "prod" }\n',
        build="true\n",
    )
    start = 1_800_000_000.0  # 2027-01-15 08:00 UTC
    assert cron.fire_due(now=start) == []  # first seen: waits for its slots
    assert cron.fire_due(now=start + 3600) == []
    three_days_later = start + 3 * DAY
    fired = cron.fire_due(now=three_days_later)
    assert len(fired) == 2  # one per schedule, not one per missed night
    assert cron.fire_due(now=three_days_later + 60) == []
    rows = home.db().execute("SELECT branch, params, trigger FROM build ORDER BY id").fetchall()
    assert [(r[0], json.loads(r[1])["flavor"], r[2]) for r in rows] == [
        ("", "dev", "schedule 0 3 * * *"),
        ("main", "prod", "schedule 30 4 * * *"),
    ]


def test_cron_weekdays_mean_what_they_mean_in_crontab():
    """APScheduler 3 counts weekdays from Monday = 0; crontab from Sunday = 0."""
    from lightci import cron

    wednesday = 1_800_000_000.0  # 2027-01-15 is a Friday: two days before it
    wednesday -= 2 * DAY
    for line, day in (
        ("0 3 * * 1", "Mon"),
        ("0 3 * * 0", "Sun"),
        ("0 3 * * 7", "Sun"),
        ("0 3 * * 1-5", "Thu"),
        ("0 3 * * sat", "Sat"),
        ("0 3 * * */6", "Sat"),
    ):
        slot = cron.due_slot(line, wednesday, wednesday + 30 * DAY)
        assert slot.strftime("%a") == day, line


def test_the_scheduler_process_fires_a_due_schedule(bound, home):
    from lightci import cron

    home.job("nightly", 'schedule = ["0 3 * * *"]\n', build="true\n")
    cron.fire_due()
    db = home.db()
    db.execute("UPDATE schedule_mark SET seen_at = ?", (time.time() - 2 * DAY,))
    db.commit()
    db.close()
    home.start_worker(str(BIN / "lightci"), "scheduler")
    wait_until(lambda: home.builds(), "the scheduler to queue the missed nightly build", 30)
    assert [b["trigger"] for b in home.builds()] == ["schedule 0 3 * * *"]


def test_day_of_month_and_weekday_together_fire_on_either(bound):
    """crontab(5): restricted both, a slot matches either field. 2025-06-01 is a Sunday."""
    from lightci import cron

    sunday = datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp()
    slot = cron.due_slot("0 0 1 * mon", sunday, sunday + 90 * DAY)
    assert slot.date().isoformat() == "2025-06-02"  # a Monday, not the next Monday the 1st
    slot = cron.due_slot("0 0 15 * mon", slot.timestamp(), sunday + 90 * DAY)
    assert slot.date().isoformat() == "2025-06-09"


def test_a_schedule_removed_and_added_back_waits_for_its_next_slot(bound, home):
    from lightci import cron

    home.job("nightly", 'schedule = ["8 3 * * *"]\n', build="true\n")
    start = datetime(2027, 1, 15, 3, 6, tzinfo=UTC).timestamp()
    assert cron.fire_due(now=start) == []  # first seen: its mark is now
    home.job("nightly", "", build="true\n")  # removed at 03:07 ...
    assert cron.fire_due(now=start + 60) == []
    home.job("nightly", 'schedule = ["8 3 * * *"]\n', build="true\n")  # ... back at 03:08:10
    assert cron.fire_due(now=start + 130) == []  # new again: not the 03:08 slot it missed
    assert cron.fire_due(now=start + 3 * 60) == []
    assert len(cron.fire_due(now=start + DAY + 3 * 60)) == 1  # tomorrow's 03:08


@pytest.mark.parametrize(
    "line, words",
    [
        ("*/0 * * * *", "a step of 0"),
        ("5-1 * * * *", "runs from low to high"),
        ("*/100 * * * *", "a step of 100"),
        ("0 0 1-31/0 * *", "a step of 0"),
        ("0 0 * * fri-mon", "runs from low to high"),
        ("0 0 * 4-jul *", "a name and a number"),
    ],
)
def test_a_cron_line_apscheduler_would_refuse_later_is_refused_at_load(home, line, words):
    from lightci.errors import UserError

    home.job("badcron", f'schedule = ["{line}"]\n', build="true\n")
    with pytest.raises(UserError, match=words):
        jobs.load(settings(home.path), "badcron")
    home.job("badcron", '[[schedules]]\ncron = "0 3 * * *"\nparams = { nope = "x" }\n')
    with pytest.raises(UserError, match="sets param.s. nope the job has not"):
        jobs.load(settings(home.path), "badcron")


def test_a_stage_that_cannot_start_fails_the_build_and_the_after_stages_still_run(home):
    """A #! naming a missing shell is the job's mistake: a failed stage, not lightci's."""
    home.job("app", 'after = ["report"]\nstages = ["build"]\n', report='echo "report ran"\n')
    build_sh = home.jobs / "app" / "build.sh"
    build_sh.write_text("#!/no/such/shell\necho never\n")
    build_sh.chmod(0o755)
    home.start_worker()
    build = home.trigger("app")
    row = home.wait_for([build])[0]
    assert row["status"] == "failed" and row["stage"] == "build"
    assert "its #! line names a program that is not here" in row["error"], row["error"]
    log = home.log(build)
    assert "report ran" in log and "internal error" not in log
    assert log.splitlines()[-1].endswith(f"finished: failed ({row['error']})")
