"""The watchdog: one thread per worker process over every build the process holds.

Each tick it enforces deadlines, notices cancels (a cancel only sets
cancel_requested; the watchdog acts on it), kills what a finished stage left
behind, samples memory, writes the heartbeat, and retries a release the
database refused (a full disk) until the build's final state is written.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from lightci import admission, peaks, sandbox, wakeups
from lightci.claims import Lease, heartbeat, release
from lightci.config import settings
from lightci.models import CANCELLED, TIMEOUT, Build
from lightci.stageproc import Stage

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.2  # seconds between watchdog ticks while builds run


@dataclass
class Watched:
    """A build this process holds, and the stage process it is running, if any."""

    build_id: int
    timeout: int
    deadline: float
    proc: Stage | None = None
    isolated: bool = False  # the stage runs in bwrap
    kill_reason: str = ""  # set once the watchdog decided to end it
    kill_status: str = ""
    term_sent_at: float = 0.0
    unreleased: tuple[str, dict] | None = None  # a final state the database refused
    after: bool = False  # running the always-run stages: a cancel no longer stops them
    memory_peak: int = 0  # bytes, the most its stages used (lightci.peaks)
    memory_written: int = 0  # ... as far as the row knows (lightci.admission.record)
    done: threading.Event = field(default_factory=threading.Event)


class Watchdog:
    """Per-process: deadlines, cancels, leftovers, heartbeats."""

    def __init__(self):
        self._held: dict[int, Watched] = {}
        self._lock = threading.Lock()
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def hold(self, watched: Watched) -> None:
        with self._lock:
            self._held[watched.build_id] = watched
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="lightci-watchdog", daemon=True
                )
                self._thread.start()
        self._busy.set()

    def drop(self, build_id: int) -> None:
        with self._lock:
            self._held.pop(build_id, None)
            if not self._held:
                self._busy.clear()

    def held(self) -> list[Watched]:
        with self._lock:
            return list(self._held.values())

    def kill(self, watched: Watched, status: str, reason: str) -> None:
        if not watched.kill_reason:
            watched.kill_status, watched.kill_reason = status, reason
        self._signal(watched)

    def _run(self) -> None:
        lease = Lease.mine()
        self._last_beat = self._last_cancel_check = 0.0
        while True:
            self._busy.wait()
            time.sleep(WATCH_INTERVAL)
            try:
                self._tick(lease)
            except Exception:  # the watchdog must outlive any one bad tick
                log.exception("watchdog tick failed")

    def _tick(self, lease: Lease) -> None:
        now = time.time()
        held = self.held()
        if not held:
            return
        peaks.sample(held)
        admission.record(held)
        if now - self._last_beat >= max(1.0, settings()["builds"]["orphan_after"] / 3):
            self._last_beat = now
            try:
                heartbeat(lease)
            except Exception as exc:  # a full disk: the next beat tries again
                log.warning("heartbeat not written: %s", exc)
        if now - self._last_cancel_check >= 0.5:
            self._last_cancel_check = now
            self._check_cancels(held)
        for watched in held:
            proc = watched.proc
            if watched.unreleased:
                self._release_again(watched)
            elif not watched.kill_reason and now > watched.deadline:
                self.kill(watched, TIMEOUT, f"timeout after {watched.timeout} s")
            elif watched.kill_reason:
                self._signal(watched)
            elif proc is not None and proc.exit_code is not None:
                # The stage's main process ended; what it left in its group goes too.
                sandbox.kill_group(proc.pid, signal.SIGKILL)

    def _release_again(self, watched: Watched) -> None:
        """Write a final state run() could not (a full disk); the build keeps its key till then."""
        status, fields = watched.unreleased
        try:
            release(watched.build_id, status, **fields)
        except Exception as exc:
            log.debug("build %s: release still refused: %s", watched.build_id, exc)
            return
        log.warning("build %s: final state %s written at last", watched.build_id, status)
        self.drop(watched.build_id)
        try:
            wakeups.wake()  # its key and slot are free: a queued build may start
        except Exception:
            log.exception("could not wake the queue; the sweeper will")

    def _check_cancels(self, held: list[Watched]) -> None:
        ids = [w.build_id for w in held if not w.kill_reason and not w.after]
        if not ids:
            return
        asked = Build.select(Build.id, Build.cancel_requested).where(
            Build.id.in_(ids), Build.cancel_requested != ""
        )
        by_id = {w.build_id: w for w in held}
        for row in asked:
            self.kill(by_id[row.id], CANCELLED, row.cancel_requested)

    def _signal(self, watched: Watched) -> None:
        """TERM the stage first; KILL its group (with bwrap: its sandbox) after the grace."""
        proc = watched.proc
        if proc is None:
            return
        now = time.time()
        if not watched.term_sent_at:
            watched.term_sent_at = now
            sandbox.signal_stage(proc.pid, signal.SIGTERM, watched.isolated)
        elif now - watched.term_sent_at >= settings()["builds"]["kill_grace"]:
            sandbox.signal_stage(proc.pid, signal.SIGKILL, watched.isolated)


watchdog = Watchdog()
