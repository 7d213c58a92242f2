"""The claim rule on its own: keys, slots, FIFO, queue_timeout and pause, on a fixed clock.

No worker runs: each test calls ``claims.claim`` in this process, as a worker
thread would, on rows made by the real ``builds.trigger``. The real-process
scenarios are in test_engine.py.
"""

from __future__ import annotations

import pytest

from lightci import builds, claims
from lightci.models import Build

NOW = 1_750_000_000.0  # the clock of every claim here, well before the real one
LEASE = claims.Lease("worker-host", 4711)


@pytest.fixture(autouse=True)
def app_job(bound):
    """This process bound to the home, with a job keyed by branch whose builds wait 60 s."""
    bound.job("app", 'key = "{branch}"\nqueue_timeout = 60\n', build="true\n")


def queue(branch: str, queued_at: float = NOW - 1) -> int:
    """Trigger a build of app on branch (its key), queued at queued_at; its id."""
    build_id = builds.trigger("app", branch=branch).id
    Build.update(queued_at=queued_at).where(Build.id == build_id).execute()
    return build_id


def claim_id() -> int | None:
    claimed = claims.claim(LEASE, now=NOW)
    return claimed.build.id if claimed else None


def test_a_claim_writes_the_lease_at_the_time_of_the_claim(home):
    build_id = queue("main")
    claimed = claims.claim(LEASE, now=NOW)
    assert claimed.build.id == build_id
    row = home.build(build_id)
    assert (row["status"], row["host"], row["pid"]) == ("running", "worker-host", 4711)
    assert row["started_at"] == row["heartbeat_at"] == NOW


def test_two_builds_of_one_key_are_never_claimed_together(home):
    home.configure(slots=3)
    first, second = queue("main"), queue("main")
    other = queue("dev")
    assert claim_id() == first
    assert claim_id() == other  # main's second build waits without holding up dev
    assert claim_id() is None  # a slot is free, but main is taken
    claims.release(first, "success")
    assert claim_id() == second


def test_a_deploying_build_still_holds_its_key_and_its_slot(home):
    home.configure(slots=1)
    first, _, other = queue("main"), queue("main"), queue("dev")
    assert claim_id() == first
    Build.update(status="deploying").where(Build.id == first).execute()
    assert claim_id() is None
    home.configure(slots=2)
    assert claim_id() == other  # the deploy still holds main


def test_slots_1_lets_one_build_run_at_a_time(home):
    home.configure(slots=1)
    a, b = queue("a"), queue("b")
    assert claim_id() == a
    assert claim_id() is None
    claims.release(a, "success")
    assert claim_id() == b


def test_slots_2_runs_two_and_the_third_waits(home):
    home.configure(slots=2)
    a, b, c = queue("a"), queue("b"), queue("c")
    assert [claim_id(), claim_id(), claim_id()] == [a, b, None]
    claims.release(b, "failed")
    assert claim_id() == c


def test_builds_of_one_key_are_claimed_in_the_order_they_were_queued(home):
    home.configure(slots=3)
    mains = [queue("main", queued_at=NOW - 10 + i) for i in range(4)]
    taken = []
    for _ in mains:
        taken.append(claim_id())
        claims.release(taken[-1], "success")
    assert taken == mains


def test_a_build_older_than_its_queue_timeout_is_not_claimed(home):
    stale = queue("main", queued_at=NOW - 61)
    assert claim_id() is None
    fresh = queue("main", queued_at=NOW - 59)
    assert claim_id() == fresh  # the stale build does not hold up its key either
    assert home.build(stale)["status"] == "queued"  # ending it expired is the sweep's work


def test_slots_0_pauses_claiming_until_raised(home):
    home.configure(slots=0)
    waiting = queue("main")
    assert claim_id() is None
    home.configure(slots=1)
    assert claim_id() == waiting


def test_a_changed_slots_value_applies_at_the_next_claim(home):
    home.configure(slots=1)
    a, b, c = queue("a"), queue("b"), queue("c")
    assert claim_id() == a
    assert claim_id() is None
    home.configure(slots=2)
    assert claim_id() == b
    home.configure(slots=1)  # lowered below what runs: nothing starts until both end
    claims.release(a, "success")
    assert claim_id() is None
    claims.release(b, "success")
    assert claim_id() == c


def test_more_asks_for_another_worker_only_when_another_build_could_start(home):
    home.configure(slots=3)
    ids = [queue(branch) for branch in ("a", "b", "c", "d")]
    more = [claims.claim(LEASE, now=NOW).more for _ in range(3)]
    assert more == [True, True, False]  # the third fills the slots: d must wait
    for build_id in ids[:3]:
        claims.release(build_id, "success")
    last = claims.claim(LEASE, now=NOW)
    assert (last.build.id, last.more) == (ids[3], False)  # slots are free, nothing is left


# -- admission by memory, starvation, priorities -------------------------------------

GB = 1024**3


def queue_job(job: str, branch: str, queued_at: float = NOW - 1, **trigger) -> int:
    build_id = builds.trigger(job, branch=branch, **trigger).id
    Build.update(queued_at=queued_at).where(Build.id == build_id).execute()
    return build_id


def test_builds_start_only_while_their_expected_peaks_fit_the_budget(home):
    home.configure(slots=4, memory_budget="3G", memory_default="1G")
    home.job("big", 'key = "{branch}"\nmemory = "2G"\n', build="true\n")
    a, b = queue_job("big", "a"), queue_job("big", "b")
    small = queue("main")  # app has no memory and no history: the 1G default
    assert claim_id() == a
    assert claim_id() == small  # b needs 2G with 1G free; the small build fits and passes it
    assert claim_id() is None  # a slot is free, but no memory
    assert home.build(a)["memory_expected"] == 2 * GB
    claims.release(a, "success")
    assert claim_id() == b


def test_a_build_bigger_than_the_whole_budget_runs_alone(home):
    home.configure(slots=4, memory_budget="1G", memory_default="512M")
    home.job("huge", 'key = "{branch}"\nmemory = "2G"\nqueue_timeout = 3600\n', build="true\n")
    small = queue("main")
    huge = queue_job("huge", "x")
    assert claim_id() == small
    assert claim_id() is None  # never beside another build
    claims.release(small, "success")
    assert claim_id() == huge  # alone: it runs rather than never
    queue("dev")
    assert claim_id() is None  # and nothing joins it


def test_a_key_s_learned_peak_replaces_the_default_from_its_second_build_on(home):
    home.configure(slots=4, memory_budget="3G", memory_default="1G")
    first = queue("main")
    assert claim_id() == first
    assert home.build(first)["memory_expected"] == GB  # no history: the default
    claims.release(first, "success", memory_peak=int(2.5 * GB))
    second, dev = queue("main"), queue("dev")
    assert claim_id() == second
    assert home.build(second)["memory_expected"] == int(2.5 * GB)
    assert claim_id() is None  # dev's 1G default no longer fits beside main's 2.5G
    assert home.build(dev)["status"] == "queued"


def test_once_the_oldest_build_waited_past_starve_after_nothing_passes_it(home):
    home.configure(slots=4, memory_budget="3G", memory_default="1G", starve_after=100)
    home.job("big", 'key = "{branch}"\nmemory = "2.5G"\nqueue_timeout = 3600\n', build="true\n")
    running = queue("a")
    assert claim_id() == running
    big = queue_job("big", "x", queued_at=NOW - 50)
    passer = queue("b")
    assert claim_id() == passer  # big waits for memory; a small one may pass it for now
    claims.release(passer, "success")
    later = NOW + 60  # big has waited 110 s
    late = queue("c", queued_at=later - 1)
    assert claims.claim(LEASE, now=later) is None  # c would fit, but may not pass big
    claims.release(running, "success")
    assert claims.claim(LEASE, now=later).build.id == big
    assert home.build(late)["status"] == "queued"


def test_higher_priority_is_claimed_first_across_keys_and_never_inside_a_key(home):
    home.configure(slots=1)
    home.job("urgent", 'key = "{branch}"\npriority = 5\n', build="true\n")
    main1 = queue("main")
    main2 = queue_job("app", "main", priority=9)  # cannot pass main1: same key
    dev = queue_job("app", "dev", priority=3)
    hot = queue_job("urgent", "x")  # the job's priority, 5
    order = []
    for _ in range(4):
        order.append(claim_id())
        claims.release(order[-1], "success")
    assert order == [hot, dev, main1, main2]


def test_a_home_made_before_admission_gets_its_columns_and_keeps_its_builds(home):
    from lightci import models

    old = queue("main")
    for column in ("priority", "memory_expected", "memory_peak"):
        models.db.execute_sql(f"ALTER TABLE build DROP COLUMN {column}")
    models.db.execute_sql("PRAGMA user_version = 0")  # as a version before the stamp left it
    models._schema_ready = False
    models.ensure_schema()
    assert claim_id() == old
    assert home.build(old)["priority"] == 0 and home.build(old)["memory_expected"] == GB


def test_a_running_build_counts_what_it_uses_when_that_is_more_than_expected(home):
    home.configure(slots=4, memory_budget="3G", memory_default="1G")
    first, second = queue("a"), queue("b")
    assert claim_id() == first
    Build.update(memory_peak=int(2.5 * GB)).where(Build.id == first).execute()  # the watchdog
    assert claim_id() is None  # 1G was expected of a; 2.5G + 1G does not fit
    Build.update(memory_peak=int(1.5 * GB)).where(Build.id == first).execute()
    assert claim_id() == second


# -- the worker's hot path ---------------------------------------------------------


def test_a_claim_right_after_a_build_skips_the_look_but_keeps_keys_and_slots(home):
    home.configure(slots=2)
    first, same_key, other, third = queue("main"), queue("main"), queue("dev"), queue("x")
    assert claims.claim(LEASE, now=NOW, look_first=False).build.id == first
    assert claims.claim(LEASE, now=NOW, look_first=False).build.id == other  # not main's 2nd
    assert claims.claim(LEASE, now=NOW, look_first=False) is None  # both slots taken
    claims.release(first, "success")
    assert claims.claim(LEASE, now=NOW, look_first=False).build.id == same_key
    assert home.build(third)["status"] == "queued"


def test_a_lightci_variable_changed_while_running_applies_at_the_next_claim(home, monkeypatch):
    home.configure(slots=1)
    a, b = queue("a"), queue("b")
    assert claim_id() == a
    assert claim_id() is None
    monkeypatch.setenv("LIGHTCI_BUILDS_SLOTS", "2")
    assert claim_id() == b


def test_the_claimed_build_reads_as_peewee_reads_it(home):
    home.job("forked", 'key = "{branch}"\n', build="true\n")
    build_id = builds.trigger(
        "forked", branch="pr", origin={"pr": 7, "fork": True, "pr_base": "main"}
    ).id
    claimed = claims.claim(LEASE, now=NOW)
    assert claimed.build.id == build_id
    assert claimed.build.__data__ == Build.get_by_id(build_id).__data__
    assert claimed.build.fork is True and claimed.build.exit_code is None
    with pytest.raises(Build.DoesNotExist):
        claims.build_by_id(build_id + 1000)


def test_a_release_writes_its_fields_once_and_a_second_release_changes_nothing(home):
    build_id = queue("main")
    claim_id()
    assert claims.release(build_id, "failed", exit_code=3, stage="build", error="stage build")
    assert not claims.release(build_id, "success", exit_code=0)
    row = home.build(build_id)
    assert (row["status"], row["exit_code"], row["stage"]) == ("failed", 3, "build")
    assert row["error"] == "stage build" and row["finished_at"]
