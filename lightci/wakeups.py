"""Wake-ups: telling the workers to look at the job table, cheaply, after a commit.

A wake-up carries nothing: the job table is the truth, and a worker that wakes
claims from it. So sending one needs no queue library:

    SQLite queue (one host)  ring the bell: every consumer process on the host
                             listens on a FIFO under HOME/run/wake/, and an idle
                             worker thread waits on it (lightci.queues turns a
                             ring into a run of the drain task)
    Redis queue ([queue] url) push WAKE onto Huey's list, which consumers on
                             every host block on

`lightci trigger` therefore costs an INSERT and a write to a pipe, not an
import of Huey. A wake-up nobody hears is harmless: a worker's start and every
sweep wake the queue when a build could run.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from lightci.config import Settings, hostname, settings

WAKE = b"wake"  # the one queue item: "look at the job table"
# Set when a worker of this process starts a drain: `serve`'s clock, asleep for
# minutes while the home is quiet, turns at once (lightci.schedule).
draining = threading.Event()
REDIS_KEY = "huey.redis.lightci"  # Huey's list for a queue named "lightci"


class Bell:
    """Cross-process wake-ups on one host through named pipes."""

    def __init__(self, wake_dir: Path):
        self.dir = wake_dir
        self._cond = threading.Condition()
        self._rings = 0  # rings heard by this process
        self._taken = 0  # rings a worker thread has acted on
        self._listening = False

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
        """Rings heard: wake one idle thread (a drain that finds more wakes the next)."""
        with self._cond:
            self._rings += rings
            self._cond.notify()

    def take(self, timeout: float) -> bool:
        """Wait up to `timeout` for rings nobody acted on yet; True when this thread takes them.

        Rings heard while every thread was busy are kept, not lost: the next
        thread to look takes them all at once (one drain claims everything
        runnable).
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._rings > self._taken, timeout):
                return False
            self._taken = self._rings
            return True

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

    def listened(self) -> bool:
        """Whether some process on this host listens: a worker (or serve) is running."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return False
        return any(name.endswith(".fifo") and not self._dead(name) for name in names)

    def _dead(self, name: str) -> bool:
        """The FIFO's process is gone (one of another host's is never known to be)."""
        host, _, pid = name.removesuffix(".fifo").rpartition("-")
        if host != hostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    def _remove_if_dead(self, name: str) -> None:
        if not self._dead(name):
            return
        try:
            (self.dir / name).unlink()
        except FileNotFoundError:
            pass


_redis_clients: dict[str, object] = {}


def wake(cfg: Settings | None = None) -> None:
    """Tell some worker to look at the job table (call after the row is committed)."""
    cfg = cfg or settings()
    url = cfg["queue"]["url"]
    if not url:
        Bell(cfg.run_dir / "wake").ring()
    elif url.startswith("redis"):
        _redis(url).lpush(REDIS_KEY, WAKE)
    else:
        raise ValueError(f"[queue] url {url!r}: only redis:// URLs (or '' for SQLite) are known")


def _redis(url: str):
    client = _redis_clients.get(url)
    if client is None:
        import redis  # optional: only a home whose [queue] url says redis:// needs it

        client = _redis_clients[url] = redis.Redis.from_url(url)
    return client


def remove_stale_bells(cfg: Settings) -> None:
    Bell(cfg.run_dir / "wake").remove_stale()


def no_worker(cfg: Settings) -> bool:
    """Nothing could run a queued build now: no worker (or serve) listens on this host's
    SQLite queue. With Redis, workers may listen on any host: not known, so False."""
    return not cfg["queue"]["url"] and not Bell(cfg.run_dir / "wake").listened()
