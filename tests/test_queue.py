"""A wake-up in the worker's queue: the drain runs at once, with no bookkeeping per wake-up."""

from __future__ import annotations

import logging

from lightci import queues
from lightci.config import settings
from lightci.wakeups import WAKE


def test_a_wake_up_runs_the_drain_without_touching_the_queue_s_database(bound, monkeypatch):
    queue = queues.make_queue(settings())
    drained = []
    monkeypatch.setattr(queues, "_handler", lambda: drained.append(1))
    looked = []
    for name in ("peek_many", "peek_data", "delete_data", "pop_data"):
        monkeypatch.setattr(queue.storage, name, lambda *a, n=name: looked.append(n))
    queue.execute(queue.deserialize_task(WAKE))
    queue.execute(queue.deserialize_task(WAKE))
    assert drained == [1, 1]
    assert looked == []  # no revocation to check, no revoke key to delete


def test_a_drain_that_fails_is_logged_and_the_next_wake_up_drains_again(bound, monkeypatch, caplog):
    queue = queues.make_queue(settings())
    calls = []

    def drain():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")

    monkeypatch.setattr(queues, "_handler", drain)
    with caplog.at_level(logging.ERROR, logger="lightci.queues"):
        queue.execute(queue.deserialize_task(WAKE))
        queue.execute(queue.deserialize_task(WAKE))
    assert len(calls) == 2
    assert "the database went away" in caplog.text
