"""The scheduler process (`lightci scheduler`, or inside `lightci serve`): what runs when.

Every scheduled job is listed here, in the one module that starts the
scheduler; nothing registers itself by being imported.
"""

from __future__ import annotations

import logging
import signal
import threading

from lightci import (
    container,
    cron,
    deploy,
    healthchecks,
    outbox,
    recovery,
    retention,
    sender,
    wakeups,
)
from lightci.schedule import Scheduler, UpkeepJob, daily, every, minutely, paced

SWEEP = "upkeep.sweep_interval"
RETENTION = "upkeep.retention_at"


def upkeep_jobs(sweeps: bool = True) -> list[UpkeepJob]:
    """sweeps=False: a worker's own sweeper sweeps in this process (`serve`)."""
    return [
        *([every(SWEEP, recovery.sweep)] if sweeps else []),  # lost workers, expired queue
        minutely(cron.fire_due),  # job.toml schedule / [[schedules]]: first, on the minute
        daily(RETENTION, retention.retention),  # old builds, unused caches
        minutely(retention.check_disk),  # low disk is logged once
        minutely(container.remove_leftovers),  # build containers of ended (lost) builds
        minutely(deploy.undeploy_removed),  # jobs whose [deploy] was deleted
        # deploys: checks, switch, drain; at once when this process started a container
        paced(
            healthchecks.LONGEST, healthchecks.check_due, healthchecks.deploying, healthchecks.due
        ),
        daily(RETENTION, deploy.prune_images),  # old images of deployed jobs
        # the outbox: commit statuses, notifications; at once after a drain in this process
        paced(sender.LONGEST, sender.send_due, outbox.recorded, sender.due),
    ]


def quiet_home() -> bool:
    """Nothing about for the minutely jobs: no build, deployment, unsent delivery or schedule."""
    return not (healthchecks.due() or sender.due() or cron.scheduled())


def start(sweeps: bool = True) -> Scheduler:
    """Reconcile, then run every upkeep job in this process; returns the scheduler.

    sweeps=False (`serve`): the worker in this process sweeps, and its drains wake
    the outbox and the deploy checks, so those rest while nothing is due (rests),
    and the clock turns every few minutes while the home is quiet (its drains stir it).
    """
    recovery.reconcile_once()
    resting = {} if sweeps else {"quiet": quiet_home, "stirred": wakeups.draining}
    scheduler = Scheduler(upkeep_jobs(sweeps), rests=not sweeps, **resting).start()
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
