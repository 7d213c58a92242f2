"""The Huey instance (``huey_consumer lightci.tasks.huey``) and its one task.

A Huey message is only a wake-up: ``run_queued`` claims from the job table,
which is the truth. The queue is made in one place (``make_huey``) from
``[queue] url``: SQLite at HOME/huey.db by default, Redis when a URL says so.

SQLite has no blocking dequeue, and Huey's idle workers back off to 10 s
between polls. So the SQLite storage here rings a bell on enqueue: every
consumer process on the host listens on a FIFO under HOME/run/wake/, and an
idle worker thread waits on that bell instead of polling (``blocking = True``
tells Huey's worker not to add its own back-off sleep).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
from pathlib import Path

from huey import Huey, RedisHuey
from huey.consumer import Consumer
from huey.storage import SqliteStorage

from lightci import models, runner, upkeep
from lightci.config import Settings, hostname, resolve_home, settings

log = logging.getLogger(__name__)

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
        self._remove_stale()
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

    def _remove_stale(self) -> None:
        for name in os.listdir(self.dir):
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


class StoppingConsumer(Consumer):
    """SIGTERM and SIGINT both stop gracefully (systemd, Docker, Ctrl+C).

    Huey's own consumer exits at once on SIGTERM and leaves the builds running
    under a dead worker. Here the first signal stops claiming, gives running
    builds [builds] stop_grace seconds, then ends them cancelled ("worker
    stopped"); a second signal cuts the grace short. SIGHUP does the same, then
    restarts the process, as in Huey.
    """

    def __init__(self, huey, **options):
        super().__init__(huey, **options)
        self._hurry = threading.Event()

    def _set_signal_handlers(self):
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._handle_signal)

    def _handle_signal(self, signum, frame):
        runner.watchdog.stopping.set()
        if self._signum is not None:
            self._hurry.set()
            return
        self._signum, self._restart, self._graceful = signum, signum == signal.SIGHUP, True

    def stop(self, graceful=False):
        runner.stop(settings()["builds"]["stop_grace"], self._hurry)
        super().stop(graceful=False)


class StoppingHuey:
    def create_consumer(self, **options):
        return StoppingConsumer(self, **options)


class BellSqliteHuey(StoppingHuey, Huey):
    storage_class = BellSqliteStorage


class StoppingRedisHuey(StoppingHuey, RedisHuey):
    pass


def make_huey(cfg: Settings) -> Huey:
    url = cfg["queue"]["url"]
    if url.startswith("redis"):
        return StoppingRedisHuey("lightci", url=url, results=False, utc=True, blocking=True)
    if url:
        raise ValueError(f"[queue] url {url!r}: only redis:// URLs (or '' for SQLite) are known")
    cfg.home.mkdir(parents=True, exist_ok=True)
    return BellSqliteHuey(
        "lightci",
        filename=str(cfg.queue_file),
        wake_dir=str(cfg.run_dir / "wake"),
        fsync=False,  # a wake-up lost to a power cut is harmless: the row is the truth
        results=False,
        utc=True,
    )


_home = resolve_home()
huey = make_huey(settings(_home))


@huey.on_startup()
def _bind() -> None:
    models.bind(settings(_home))
    upkeep.reconcile_once()  # builds of dead workers on this host end lost, the queue wakes
    _start_sweeper()


_sweeper_lock = threading.Lock()
_sweeper: threading.Thread | None = None


def _start_sweeper() -> None:
    """Every worker process sweeps too, so plain consumers heal without `lightci scheduler`.

    A SIGKILLed sibling's builds end lost and their keys and slots come free
    even when nobody runs the scheduler; the sweep is idempotent, so several
    sweepers (workers and the scheduler) never end a build twice.
    """
    global _sweeper
    with _sweeper_lock:
        if _sweeper is not None:
            return
        _sweeper = threading.Thread(target=_sweep_forever, name="lightci-sweeper", daemon=True)
        _sweeper.start()


def _sweep_forever() -> None:
    while not runner.watchdog.stopping.is_set():
        cfg = settings(_home)
        runner.watchdog.stopping.wait(cfg["upkeep"]["sweep_interval"])
        try:
            upkeep.sweep()
        except Exception:
            log.exception("worker-side sweep failed; trying again next interval")


@huey.task()
def run_queued() -> None:
    """Claim and run builds until nothing is runnable."""
    models.bind(settings(_home))
    runner.drain(wake)


_queues: dict[Path, Huey] = {}


def wake() -> None:
    """Tell some worker to look at the job table (call after the row is committed).

    The queue is the current home's: a test or a CLI call with --home may
    differ from the home this module was imported for.
    """
    cfg = settings()
    if cfg.home == _home:
        run_queued()
        return
    _queue(cfg).enqueue(run_queued.s())


def _queue(cfg: Settings) -> Huey:
    if cfg.home == _home:
        return huey
    queue = _queues.get(cfg.home)
    if queue is None:
        queue = _queues[cfg.home] = make_huey(cfg)
        queue.task()(run_queued.func)  # the same task name, so its consumers know the message
    return queue


def pending() -> int:
    """Wake-ups waiting in the current home's queue (the sweeper re-wakes when none is)."""
    return _queue(settings()).pending_count()
