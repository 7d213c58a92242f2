"""The scheduler process (`lightci scheduler`, or inside `lightci serve`): what runs when.

Every scheduled job is listed here, in the one module that starts the
scheduler; nothing registers itself by being imported.
"""

from __future__ import annotations

import logging
import signal
import threading

from lightci import container, cron, deploy, healthchecks, recovery, retention, sender
from lightci.schedule import Scheduler, UpkeepJob, daily, every, paced

SWEEP = "upkeep.sweep_interval"
RETENTION = "upkeep.retention_at"


def upkeep_jobs() -> list[UpkeepJob]:
    return [
        every(SWEEP, recovery.sweep),  # lost workers, expired queue, re-dispatch
        daily(RETENTION, retention.retention),  # old builds, unused caches
        every(30, retention.check_disk),  # low disk is logged once
        every(30, container.remove_leftovers),  # build containers of ended (lost) builds
        # deploys: checks, switch, drain; at once when this process started a container
        paced(healthchecks.LONGEST, healthchecks.check_due, healthchecks.deploying),
        every(30, deploy.undeploy_removed),  # jobs whose [deploy] was deleted
        daily(RETENTION, deploy.prune_images),  # old images of deployed jobs
        # the outbox: commit statuses, notifications; at once after a drain in this process
        paced(sender.LONGEST, sender.send_due, sender.recorded),
        paced(60, cron.fire_paced),  # job.toml schedule / [[schedules]]
    ]


def start() -> Scheduler:
    """Reconcile, then run every upkeep job in this process; returns the scheduler."""
    recovery.reconcile_once()
    scheduler = Scheduler(upkeep_jobs()).start()
    retention.check_disk()
    return scheduler


def run_forever() -> int:
    """`lightci scheduler`: start, then wait for SIGTERM or SIGINT and stop cleanly."""
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] %(levelname)s:%(name)s: %(message)s"
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    scheduler = start()
    while not done.wait(1):
        pass
    scheduler.shutdown(wait=True)
    return 0
