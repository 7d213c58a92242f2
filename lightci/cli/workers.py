"""`lightci worker`: run builds, and nothing else.

Apart from servers: a worker never loads the web server or the scheduler
(bottle, waitress, APScheduler and their kin: ~4.5 MB of every worker at rest).
"""

from __future__ import annotations

from lightci import worker as workers
from lightci.cli import control
from lightci.cli.home import ready


def threads(args, cfg) -> int:
    """--workers, else max(4, slots): a thread per slot, and a few to spare."""
    return args.workers or max(4, cfg.slots)


def worker(args) -> int:
    workers.lean_memory()  # before any thread starts
    cfg = ready(args)
    consumer = workers.consumer(cfg, threads(args, cfg))
    control.offer(cfg.home)
    consumer.run()
    return 0
