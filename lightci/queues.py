"""The queue workers consume (Huey), made from the settings on first use, never at import.

``make_queue`` is the one place a queue is made: SQLite at HOME/huey.db by
default, Redis when ``[queue] url`` says so. Its one task drains the job table;
what that runs is the worker's to say (``on_wake``). A WAKE item (lightci.wakeups)
becomes a run of that task, and on SQLite so does a ring of the bell.

SQLite has no blocking dequeue, and Huey's idle workers back off to 10 s
between polls; here an idle worker thread waits on the bell instead
(``blocking = True`` tells Huey's worker not to add its own back-off sleep).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from huey import Huey, RedisHuey
from huey.consumer import Consumer
from huey.storage import SqliteStorage

from lightci.config import Settings, settings
from lightci.wakeups import WAKE, Bell

log = logging.getLogger(__name__)

# Seconds an idle worker thread waits for the bell before it looks anyway: a ring
# nobody heard is also caught by the worker's sweeper, which wakes the queue when a
# build could run (every 300 s at rest), so this is only a last resort.
IDLE_POLL = 3600.0


class BellSqliteStorage(SqliteStorage):
    blocking = True  # dequeue() waits for the bell; Huey's worker adds no back-off

    def __init__(self, *args, wake_dir: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.bell = Bell(Path(wake_dir))
        # Threads of one process (web + workers in `lightci serve`) take turns
        # here: SQLite's busy handler would sleep in steps of up to 100 ms.
        self._turns = threading.Lock()

    def enqueue(self, data, priority=None):
        with self._turns:
            super().enqueue(data, priority)
        self.bell.ring()

    def dequeue(self):
        self.bell.listen()
        data = self._take()
        if data is None and self.bell.take(IDLE_POLL):
            data = WAKE  # a ring is a wake-up of its own
        return data

    def _take(self):
        with self._turns:
            return super().dequeue()


class LightciQueue:
    """What lightci adds to a Huey: WAKE items, and the worker's own consumer class."""

    consumer_class: type[Consumer] = Consumer
    wake_task = None  # the one task, registered by make_queue

    def create_consumer(self, **options):
        return self.consumer_class(self, **options)

    def deserialize_task(self, data):
        if data == WAKE:
            return self.wake_task.s()
        return super().deserialize_task(data)

    def execute(self, task, timestamp=None):
        """Run the one task, the drain, at once. It has nothing to revoke, expire,
        retry or store, and Huey's bookkeeping for those costs two queries of the
        queue's database a wake-up, one of them a write."""
        try:
            task.execute()
        except Exception:  # the worker thread goes on to the next wake-up
            log.exception("a drain of the job table failed")


class BellSqliteHuey(LightciQueue, Huey):
    storage_class = BellSqliteStorage


class LightciRedisHuey(LightciQueue, RedisHuey):
    pass


def make_queue(cfg: Settings) -> Huey:
    """The queue of cfg's home, from [queue] url."""
    url = cfg["queue"]["url"]
    if url.startswith("redis"):
        queue: Huey = LightciRedisHuey("lightci", url=url, results=False, utc=True, blocking=True)
    elif url:
        raise ValueError(f"[queue] url {url!r}: only redis:// URLs (or '' for SQLite) are known")
    else:
        cfg.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        queue = BellSqliteHuey(
            "lightci",
            filename=str(cfg.queue_file),
            wake_dir=str(cfg.run_dir / "wake"),
            fsync=False,  # a wake-up lost to a power cut is harmless: the row is the truth
            results=False,
            utc=True,
        )
    queue.wake_task = queue.task(name="run_queued")(_run_queued)
    return queue


_queues: dict[Path, Huey] = {}
_queues_lock = threading.Lock()
_handler: Callable[[], None] | None = None


def queue(cfg: Settings | None = None) -> Huey:
    """The current home's queue, made on first use and kept for the process."""
    cfg = cfg or settings()
    with _queues_lock:
        made = _queues.get(cfg.home)
        if made is None:
            made = _queues[cfg.home] = make_queue(cfg)
        return made


def on_wake(handler: Callable[[], None]) -> None:
    """What a wake-up runs in this process: the worker's drain."""
    global _handler
    _handler = handler


def _run_queued() -> None:
    if _handler is None:
        raise RuntimeError("a wake-up reached a process that runs no builds (no on_wake handler)")
    _handler()


def listen(queue: Huey) -> None:
    """Hear rings from now on (a worker, before its start-up reconciliation wakes it)."""
    if isinstance(queue.storage, BellSqliteStorage):
        queue.storage.bell.listen()


def pending() -> int:
    """Wake-ups waiting in the current home's queue (the sweeper re-wakes when none is)."""
    return queue().pending_count()
