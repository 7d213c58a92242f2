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
