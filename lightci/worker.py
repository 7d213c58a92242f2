"""The worker process: a Huey consumer whose wake-ups claim and run builds.

``lightci worker`` and ``huey_consumer lightci.tasks.huey`` both end here:
``prepare(queue)`` gives the home's queue this process's handlers (a wake-up
drains the job table; a start reconciles and starts the sweeper; SIGTERM and
SIGINT stop gracefully). Nothing happens at import.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import threading
import time

from huey import Huey
from huey.consumer import Consumer, Scheduler

from lightci import models, outbox, queues, recovery, runner, wakeups
from lightci.config import Settings, settings

log = logging.getLogger(__name__)

# Seconds between a worker's own sweeps while no build runs or waits: any wake-up
# on this host brings back [upkeep] sweep_interval (the scheduler keeps that pace).
REST_SWEEP = 300.0
HEALTH_CHECK = 300.0  # seconds between looks at the worker threads (Huey's default: 10)
M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2  # malloc arenas for the whole process (glibc's default: 8 per core)

_libc = ctypes.CDLL(None)


def lean_memory() -> None:
    """Before any thread starts: two malloc arenas for the process, not eight per core.

    glibc gives each thread that allocates under contention an arena of its own
    and keeps their freed memory: after a burst of builds an idle worker held
    twice the RSS it started with. Elsewhere (macOS, musl) there is no mallopt,
    or it ignores the parameter, and nothing changes.
    """
    mallopt = getattr(_libc, "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, ARENAS)


def give_back_memory() -> None:
    """Return the heap's free pages to the system (glibc); a no-op elsewhere."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


class SignalPipe:
    """A byte per signal, so the main thread wakes at once in select().

    Python runs a signal handler in the main thread, and only when that thread
    runs bytecode: blocked in a lock wait it notices a signal delivered to
    another thread only when the wait times out (Huey therefore looks at its
    stop flag every 0.1 s). signal.set_wakeup_fd makes the interpreter write to
    this pipe from the C-level handler, whichever thread received the signal.
    """

    def __init__(self):
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def wait(self, timeout: float) -> bool:
        """Until a signal arrives or `timeout` s pass; True when a signal came."""
        ready, _, _ = select.select([self._read], [], [], max(0.0, timeout))
        if ready:
            os.read(self._read, 4096)
        return bool(ready)


class NoSchedule(Scheduler):
    """Huey's scheduler thread, asleep until the consumer stops.

    It would read the delayed and periodic tasks' schedule (a new SQLite
    connection each time) once a minute; lightci queues neither kind.
    """

    def loop(self, now=None):
        self.stop_flag.wait()


class StoppingConsumer(Consumer):
    """SIGTERM and SIGINT both stop gracefully (systemd, Docker, Ctrl+C).

    Huey's own consumer exits at once on SIGTERM and leaves the builds running
    under a dead worker. Here the first signal stops claiming, gives running
    builds [builds] stop_grace seconds, then ends them cancelled ("worker
    stopped"); a second signal cuts the grace short. SIGHUP does the same, then
    restarts the process, as in Huey.
    """

    scheduler_class = NoSchedule

    def __init__(self, huey, **options):
        options["health_check_interval"] = HEALTH_CHECK
        super().__init__(huey, **options)
        # A plain `huey_consumer lightci.tasks.huey` starts 1 thread unless told -w N:
        # one build at a time, whatever slots says (see _few_threads).
        _threads[:] = [self.workers]
        self._hurry = threading.Event()
        # The main loop sleeps in SignalPipe.wait instead; Huey's own wait only looks.
        self._stop_flag_timeout = 0
        self._signals: SignalPipe | None = None

    def _set_signal_handlers(self):
        self._signals = SignalPipe()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._handle_signal)

    def loop(self, health_check_ts=None):
        """Sleep until a signal or the next health check, then do Huey's part of a turn."""
        if self._signum is None and not self.stop_flag.is_set():
            since = time.monotonic() - (health_check_ts or time.monotonic())
            self._signals.wait(self._health_check_interval - since)
        return super().loop(health_check_ts)

    def _handle_signal(self, signum, frame):
        runner.watchdog.stopping.set()
        if self._signum is not None:
            self._hurry.set()
            return
        self._signum, self._restart, self._graceful = signum, signum == signal.SIGHUP, True

    def stop(self, graceful=False):
        runner.stop(settings()["builds"]["stop_grace"], self._hurry)
        super().stop(graceful=False)


def _drain() -> None:
    """A wake-up: claim and run builds until nothing is runnable."""
    models.bind(settings())
    _few_threads()
    wakeups.draining.set()
    if _sweeper_rests.is_set():
        _stir(sweep=False)  # builds may run again: the sweeper keeps [upkeep]'s pace
    runner.drain(wakeups.wake)
    outbox.recorded.set()  # the builds' statuses are committed: `serve` sends them now
    if not runner.watchdog.held():  # the process comes to rest: the burst's heap goes back
        give_back_memory()
        _stir(sweep=True)  # and the sweeper looks now, while warm: nothing left, it rests


def _started() -> None:
    """Once per worker thread at start (Huey's start-up hook)."""
    models.bind(settings())
    _few_threads()  # said at start, not only at the first build that waits for a thread
    recovery.reconcile_once()  # builds of dead workers on this host end lost, the queue wakes
    _start_sweeper()


def prepare(cfg: Settings) -> Huey:
    """The home's queue, set up to run builds in this process."""
    queue = queues.queue(cfg)
    queues.on_wake(_drain)
    queues.listen(queue)  # rings sent from here on are kept until a thread takes them
    if queue.consumer_class is not StoppingConsumer:
        queue.consumer_class = StoppingConsumer
        queue.on_startup()(_started)
    return queue


def consumer(cfg: Settings, workers: int) -> Consumer:
    return prepare(cfg).create_consumer(
        workers=workers, worker_type="thread", periodic=False, check_worker_health=True
    )


_threads: list[int] = []  # this process's worker threads: a build runs on one
_warned: set[int] = set()  # slots settings warned about


def _few_threads() -> None:
    """slots, re-read at every claim, may grow past the threads this process started
    with, which no claim can add: say so (once per value) where the operator looks."""
    slots = settings().slots
    if _threads and slots > _threads[0] and slots not in _warned:
        _warned.add(slots)
        log.warning(
            "[builds] slots = %d, but this worker runs builds on %d thread(s): at most %d "
            "at once here until it restarts (or start it with --workers %d; huey_consumer: -w)",
            slots,
            _threads[0],
            _threads[0],
            slots,
        )


_sweeper_lock = threading.Lock()
_sweeper_rests = threading.Event()
_stirred = threading.Event()
_sweep_now = False  # what the stir asks: a sweep now, or only the busy pace from now on
_sweeper: threading.Thread | None = None


def _stir(sweep: bool) -> None:
    global _sweep_now
    with _sweeper_lock:
        _sweep_now = _sweep_now or sweep
        _stirred.set()


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
    """Sweep, then wait: the first pass runs at start, while the process is warm (on a VM
    a pass after seconds asleep costs tens of ms), and a home at rest rests at once.

    A drain that starts while the sweeper rests only brings back the busy pace: a
    sweep then would run beside the build's start, on the same cold CPU, and its
    wake-up of the queue would start a second, idle drain."""
    global _sweep_now
    sweep = True
    while not runner.watchdog.stopping.is_set():
        if sweep:
            try:
                busy = recovery.sweep()["busy"]
            except Exception:  # the sweeper outlives any one bad pass
                log.exception("worker-side sweep failed; trying again next interval")
                busy = True
        else:
            busy = True  # stirred by a drain: builds run
        if busy:
            _sweeper_rests.clear()
        else:
            _sweeper_rests.set()
        interval = settings()["upkeep"]["sweep_interval"]
        stirred = _stirred.wait(max(interval, REST_SWEEP) if _sweeper_rests.is_set() else interval)
        with _sweeper_lock:
            _stirred.clear()
            sweep, _sweep_now = not stirred or _sweep_now, False
