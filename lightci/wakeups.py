"""Wake-ups: the queue that tells a worker to look at the job table.

A queue message is only a wake-up: the worker claims from the job table,
which is the truth. The queue is made in one place (``make_queue``) from
``[queue] url`` when first used, never at import: SQLite at HOME/huey.db by
default, Redis when a URL says so.

SQLite has no blocking dequeue, and Huey's idle workers back off to 10 s
between polls. So the SQLite storage here rings a bell on enqueue: every
consumer process on the host listens on a FIFO under HOME/run/wake/, and an
idle worker thread waits on that bell instead of polling (``blocking = True``
tells Huey's worker not to add its own back-off sleep).

What a wake-up runs is the worker's to say (``on_wake``): this layer only
carries the message.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

from huey import Huey, RedisHuey
from huey.consumer import Consumer
from huey.storage import SqliteStorage

from lightci.config import Settings, hostname, settings

IDLE_POLL = 5.0  # seconds an idle worker thread waits for the bell before it looks anyway


class Bell:
    """Cross-process wake-ups on one host through named pipes."""

    def __init__(self, wake_dir: Path):
        self.dir = wake_dir
        self._cond = threading.Condition()
        self._rings = 0
        self._listening = False

    @property
    def rings(self) -> int:
        return self._rings

    def listen(self) -> None:
        """Make this process's FIFO and a thread that turns bytes into notifications."""
        with self._cond:
            if self._listening:
                return
            self._listening = True
        self.dir.mkdir(parents=True, exist_ok=True)
        self.remove_stale()
        path = self.dir / f"{hostname()}-{os.getpid()}.fifo"
        if path.exists():
            path.unlink()
        os.mkfifo(path, 0o600)
        # O_RDWR: the read end never sees EOF when ringers close their write end.
        fd = os.open(path, os.O_RDWR)
        threading.Thread(target=self._listen, args=(fd,), name="lightci-bell", daemon=True).start()

    def _listen(self, fd: int) -> None:
        while True:
            rings = len(os.read(fd, 4096))
            self.notify(rings)

    def notify(self, rings: int = 1) -> None:
        """One ring per enqueued message: wake as many idle threads, not all of them."""
        with self._cond:
            self._rings += rings
            self._cond.notify(rings)

    def wait(self, seen: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._rings != seen, timeout)

    def ring(self) -> None:
        """Wake every listening process on this host."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(".fifo"):
                continue
            try:
                fd = os.open(self.dir / name, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nobody reads it: its process is gone
                    self._remove_if_dead(name)
                continue
            try:
                os.write(fd, b"!")
            except BlockingIOError:
                pass  # full pipe: a wake-up is pending already
            finally:
                os.close(fd)

    def remove_stale(self) -> None:
        """The pipes of processes on this host that are gone."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".fifo"):
                self._remove_if_dead(name)

    def _remove_if_dead(self, name: str) -> None:
        host, _, pid = name.removesuffix(".fifo").rpartition("-")
        if host != hostname() or not pid.isdigit():
            return
        try:
            os.kill(int(pid), 0)
            return
        except ProcessLookupError:
            pass
        except PermissionError:
            return
        try:
            (self.dir / name).unlink()
        except FileNotFoundError:
            pass


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
        seen = self.bell.rings
        data = self._take()
        if data is None:
            self.bell.wait(seen, IDLE_POLL)
            data = self._take()
        return data

    def _take(self):
        with self._turns:
            return super().dequeue()


class LightciQueue:
    """What a worker adds to a queue: its own consumer class (graceful stops)."""

    consumer_class: type[Consumer] = Consumer
    wake_task = None  # the one task, registered by make_queue

    def create_consumer(self, **options):
        return self.consumer_class(self, **options)


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
        cfg.home.mkdir(parents=True, exist_ok=True)
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


def wake() -> None:
    """Tell some worker to look at the job table (call after the row is committed)."""
    made = queue()
    made.enqueue(made.wake_task.s())


def remove_stale_bells(cfg: Settings) -> None:
    Bell(cfg.run_dir / "wake").remove_stale()


def pending() -> int:
    """Wake-ups waiting in the current home's queue (the sweeper re-wakes when none is)."""
    return queue().pending_count()
