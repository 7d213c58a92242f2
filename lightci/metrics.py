"""/metrics: the job table, slots, build times, disk and deployments as Prometheus text."""

from __future__ import annotations

import threading

from lightci import delivery, retention
from lightci.config import settings
from lightci.models import ACTIVE, LIVE, OPEN_IN, QUEUED, STATES, Deployment, db, run_sql

HISTOGRAM_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


def text() -> str:
    """Every series, in Prometheus' text format."""
    cfg = settings()
    counts = dict(db.execute_sql("SELECT status, COUNT(*) FROM build GROUP BY status").fetchall())
    lines = [
        "# HELP lightci_builds Builds in the job table by state.",
        "# TYPE lightci_builds gauge",
    ]
    lines += [f'lightci_builds{{state="{s}"}} {counts.get(s, 0)}' for s in STATES]
    used = sum(counts.get(s, 0) for s in ACTIVE)
    lines += [
        "# HELP lightci_queue_length Builds waiting for a slot.",
        "# TYPE lightci_queue_length gauge",
        f"lightci_queue_length {counts.get(QUEUED, 0)}",
        "# HELP lightci_slots_used Slots held by running or deploying builds.",
        "# TYPE lightci_slots_used gauge",
        f"lightci_slots_used {used}",
        "# HELP lightci_slots Slots configured ([builds] slots).",
        "# TYPE lightci_slots gauge",
        f"lightci_slots {cfg.slots}",
    ]
    lines += _histograms()
    return "\n".join(lines) + "\n" + disk() + deployments() + delivery.prometheus()


HISTOGRAMS = (
    (
        "lightci_queue_wait_seconds",
        "Seconds builds in the table waited for a slot (those that started).",
        "started_at - queued_at",
    ),
    (
        "lightci_build_duration_seconds",
        "Seconds from start to end of the finished builds in the table.",
        "finished_at - started_at",
    ),
)


class _Settled:
    """The histograms' share of settled builds, summed once instead of at every scrape.

    Every build older than the oldest queued or running one is final and its
    times never change, so its share is kept and only newer rows are read
    again. Rows that retention removes later stay counted: like a Prometheus
    counter, the histograms only grow while the process lives.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.database: str | None = None
        self.below = 0
        self.kept: list[float] = []  # bucket counts, count and sum of each histogram


_settled = _Settled()


def _histogram_row(low: int, high: int | None) -> list[float]:
    """Bucket counts, count and sum of both histograms over builds low <= id < high."""
    columns = []
    for _, _, expr in HISTOGRAMS:
        columns += [f"SUM(CASE WHEN {expr} <= {b} THEN 1 ELSE 0 END)" for b in HISTOGRAM_BUCKETS]
        columns += [f"COUNT({expr})", f"COALESCE(SUM({expr}), 0)"]
    where, args = "started_at IS NOT NULL AND id >= ?", [low]
    if high is not None:
        where, args = where + " AND id < ?", [low, high]
    sql = f"SELECT {', '.join(columns)} FROM build WHERE {where}"
    return [v or 0 for v in run_sql(sql, *args).fetchone()]


def _histograms() -> list[str]:
    with _settled.lock:
        if _settled.database != db.obj.database:  # another home (tests): start over
            width = len(HISTOGRAMS) * (len(HISTOGRAM_BUCKETS) + 2)
            _settled.database, _settled.below, _settled.kept = db.obj.database, 0, [0] * width
        open_ids = f"SELECT MIN(id) FROM build WHERE status IN {OPEN_IN}"
        first_open = db.execute_sql(open_ids).fetchone()[0]
        if first_open is None:
            first_open = (db.execute_sql("SELECT MAX(id) FROM build").fetchone()[0] or 0) + 1
        if first_open > _settled.below:
            fresh = _histogram_row(_settled.below, first_open)
            _settled.kept = [a + b for a, b in zip(_settled.kept, fresh, strict=True)]
            _settled.below = first_open
        newer = _histogram_row(_settled.below, None)
        row = [a + b for a, b in zip(_settled.kept, newer, strict=True)]
    lines, width = [], len(HISTOGRAM_BUCKETS) + 2
    for n, (name, help_text, _) in enumerate(HISTOGRAMS):
        values = row[n * width : (n + 1) * width]
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for bound, count in zip(HISTOGRAM_BUCKETS, values, strict=False):
            lines.append(f'{name}_bucket{{le="{bound}"}} {count}')
        total, seconds = values[-2], values[-1]
        lines.append(f'{name}_bucket{{le="+Inf"}} {total}')
        lines.append(f"{name}_sum {round(seconds, 3)}")
        lines.append(f"{name}_count {total}")
    return lines


def disk() -> str:
    """Free space where the home lives."""
    state = retention.disk()
    return (
        "# HELP lightci_disk_free_bytes Free bytes on the filesystem of the lightci home.\n"
        "# TYPE lightci_disk_free_bytes gauge\n"
        f"lightci_disk_free_bytes {state['free_bytes']}\n"
        "# HELP lightci_disk_low 1 when free space is under [upkeep] disk_warn_mb.\n"
        "# TYPE lightci_disk_low gauge\n"
        f"lightci_disk_low {int(state['low'])}\n"
    )


def deployments() -> str:
    """Prometheus lines for /metrics: is each job's live container healthy."""
    lines = [
        "# HELP lightci_deployment_healthy 1 when the job's live container passes its checks.",
        "# TYPE lightci_deployment_healthy gauge",
    ]
    for d in Deployment.select().where(Deployment.state == LIVE).order_by(Deployment.job):
        healthy = 0 if d.health == "unhealthy" else 1
        lines.append(f'lightci_deployment_healthy{{job="{d.job}",slot="{d.slot}"}} {healthy}')
    return "\n".join(lines) + "\n"
