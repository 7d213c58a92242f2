"""Delivery numbers over a window: how often builds and deploys succeed, how long a push
takes to be deployed, how long builds wait, how busy the slots are, how often builds
time out or expire. Per job and overall; the Metrics page, the API and /metrics read them.

Definitions (README "Release pipelines"):
- build success rate: success / builds that ran and ended on their own (success,
  failed, timeout, lost) and finished in the window; cancelled and expired builds and
  rollback actions are not counted.
- deploy success rate: Docker deploys of builds (live, draining or retired count as
  good, failed as bad) plus GitOps bumps (pushed or unchanged good, failed bad).
- lead time: a build's queued_at (the push) to its container going live or its bump
  being pushed; p50 and p95 by nearest rank.
- queue wait: started_at - queued_at of builds that started in the window.
- slot utilisation: busy build-seconds / (slots x seconds) per hour (windows of up to
  two days) or per day.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from lightci import jobs
from lightci.config import settings
from lightci.errors import UserError
from lightci.models import (
    DRAINING,
    EXPIRED,
    FAILED,
    LIVE,
    LOST,
    RETIRED,
    SUCCESS,
    TIMEOUT,
    Build,
    Bump,
    Deployment,
    iso,
)

RAN = (SUCCESS, FAILED, TIMEOUT, LOST)
DAY = 86400
MAX_DAYS = 366


def window_days(text: str | int | None) -> float:
    """'30d', '12h', '7' (days) -> days; the default is [targets] window_days."""
    if text is None or text == "":
        return float(settings()["targets"]["window_days"])
    raw = str(text).strip().lower()
    try:
        days = float(raw[:-1]) / 24 if raw.endswith("h") else float(raw.rstrip("d"))
    except ValueError:
        raise UserError(f"window {text!r}: use days such as 30, 30d or hours such as 12h") from None
    if not 0 < days <= MAX_DAYS:
        raise UserError(f"window {text!r}: between 1h and {MAX_DAYS}d")
    return days


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _ratio(good: int, total: int) -> float | None:
    return round(good / total, 4) if total else None


def numbers(job: str | None = None, days: float | None = None, now: float | None = None):
    """Every delivery number of one job (or all jobs) over the last `days`."""
    if job:
        jobs.check_name(job)
    days = window_days(days)
    now = time.time() if now is None else now
    start = now - days * DAY
    query = Build.select().where(
        (Build.finished_at >= start) | (Build.started_at >= start) | Build.finished_at.is_null()
    )
    if job:
        query = query.where(Build.job == job)
    rows = [b for b in query if not b.trigger.startswith("rollback")]
    ended = [b for b in rows if b.finished_at is not None and start <= b.finished_at <= now]
    ran = [b for b in ended if b.status in RAN]
    waits = [
        b.started_at - b.queued_at
        for b in rows
        if b.started_at is not None and start <= b.started_at <= now
    ]
    good_deploys, deploys, deployed_at = _deploys(job, start, now)
    leads = [
        deployed_at[b.id] - b.queued_at
        for b in ended
        if b.status == SUCCESS and b.id in deployed_at
    ]
    cfg = settings()
    result = {
        "job": job,
        "window": {"days": days, "start": iso(start), "end": iso(now)},
        "builds": len(ran),
        "build_success_rate": _ratio(sum(b.status == SUCCESS for b in ran), len(ran)),
        "deploys": deploys,
        "deploy_success_rate": _ratio(good_deploys, deploys),
        "lead_time": {
            "count": len(leads),
            "p50": _round(percentile(leads, 50)),
            "p95": _round(percentile(leads, 95)),
        },
        "queue_wait": {
            "count": len(waits),
            "mean": _round(sum(waits) / len(waits)) if waits else None,
            "p95": _round(percentile(waits, 95)),
        },
        "slot_utilisation": _utilisation(rows, start, now, days, max(1, cfg.slots)),
        "timeouts_per_day": _per_day(ended, start, now),
    }
    result["slot_utilisation_mean"] = _round(
        sum(u["ratio"] for u in result["slot_utilisation"]) / len(result["slot_utilisation"]), 4
    )
    result["below_target"] = misses(result)
    return result


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _deploys(job: str | None, start: float, now: float) -> tuple[int, int, dict[int, float]]:
    """(good, all) deploys and bumps in the window, and when each build's went out."""
    good = total = 0
    deployed_at: dict[int, float] = {}
    query = Deployment.select().where(
        Deployment.build_id.is_null(False),
        Deployment.created_at >= start,
        Deployment.created_at <= now,
    )
    if job:
        query = query.where(Deployment.job == job)
    rows = list(query)
    # A deploy that failed before its container existed (no engine, a bad Dockerfile) left
    # no Deployment row, nor a release whose images failed a bump: such a build, failed at
    # its deploy or images stage, counts as a failed deploy.
    started = {d.build_id for d in rows}
    unmade = Build.select(Build.id).where(  # its [[images]] too: nothing went out either
        Build.stage.in_(("deploy", "images")),
        Build.status == FAILED,
        Build.finished_at.between(start, now),
    )
    total += sum(
        1 for b in (unmade.where(Build.job == job) if job else unmade) if b.id not in started
    )
    for d in rows:
        if d.state in (LIVE, DRAINING, RETIRED) and d.switched_at:
            good, total = good + 1, total + 1
            deployed_at[d.build_id] = min(d.switched_at, deployed_at.get(d.build_id, d.switched_at))
        elif d.state == FAILED:
            total += 1
    bumps = Bump.select().where(Bump.created_at >= start, Bump.created_at <= now)
    if job:
        bumps = bumps.where(Bump.job == job)
    for b in bumps:
        total += 1
        if b.state in ("pushed", "unchanged"):
            good += 1
            if b.kind == "bump" and b.build_id is not None:
                deployed_at.setdefault(b.build_id, b.created_at)
    return good, total, deployed_at


def _utilisation(rows, start: float, now: float, days: float, slots: int) -> list[dict]:
    step = 3600 if days <= 2 else DAY
    first = start - start % step
    buckets = []
    edge = first
    while edge < now:
        buckets.append([edge, 0.0])
        edge += step
    for b in rows:
        if b.started_at is None:
            continue
        begin, end = b.started_at, b.finished_at or now
        for bucket in buckets:
            lo, hi = max(bucket[0], start), min(bucket[0] + step, now)
            bucket[1] += max(0.0, min(end, hi) - max(begin, lo))
    out = []
    for edge, busy in buckets:
        span_s = min(edge + step, now) - max(edge, start)
        ratio = busy / (slots * span_s) if span_s > 0 else 0.0
        out.append({"start": iso(edge), "ratio": round(min(ratio, 1.0), 4)})
    return out


def _per_day(ended, start: float, now: float) -> list[dict]:
    days: dict[str, dict] = {}
    day = start - start % DAY
    while day <= now:
        key = time.strftime("%Y-%m-%d", time.gmtime(day))
        days[key] = {"day": key, "timeouts": 0, "expiries": 0}
        day += DAY
    for b in ended:
        key = time.strftime("%Y-%m-%d", time.gmtime(b.finished_at))
        if key in days and b.status in (TIMEOUT, EXPIRED):
            days[key]["timeouts" if b.status == TIMEOUT else "expiries"] += 1
    return list(days.values())


def targets() -> dict[str, float]:
    t = settings()["targets"]
    return {
        "build_success_rate": t["build_success"] / 100,
        "deploy_success_rate": t["deploy_success"] / 100,
        "lead_time_p95": t["lead_time"],
        "queue_wait_mean": t["queue_wait"],
    }


def misses(result: dict[str, Any]) -> list[str]:
    """Sentences for each number on the wrong side of its target (a target of 0 is off)."""
    t, out = targets(), []
    for key, label in (
        ("build_success_rate", "build success"),
        ("deploy_success_rate", "deploy success"),
    ):
        value = result[key]
        if t[key] and value is not None and value < t[key]:
            out.append(f"{label} {value:.0%} < {t[key]:.0%}")
    for value, target, label in (
        (result["lead_time"]["p95"], t["lead_time_p95"], "lead time p95"),
        (result["queue_wait"]["mean"], t["queue_wait_mean"], "mean queue wait"),
    ):
        if target and value is not None and value > target:
            out.append(f"{label} {value:.0f} s > {target} s")
    return out


def per_job(days: float | None = None, now: float | None = None) -> dict[str, dict]:
    good, _ = jobs.load_all(settings())
    return {job.name: numbers(job.name, days, now) for job in good}


CACHE_SECONDS = 30  # the dashboard refreshes every few seconds; these numbers move slowly
_cache: dict[tuple, tuple[float, Any]] = {}
_cache_lock = threading.Lock()


def _cached(name: str, compute):
    """compute(), reused for CACHE_SECONDS per home and lightci.toml reading."""
    cfg = settings()
    key = (name, cfg.home, cfg.stamp)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and time.time() - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = compute()
    with _cache_lock:
        for old in [k for k in _cache if k[1:] != key[1:]]:  # another home or settings
            del _cache[old]
        _cache[key] = (time.time(), value)
    return value


def below_target() -> dict[str, list[str]]:
    """Jobs whose numbers over the targets' window miss a target: the dashboard flags them."""
    return _cached(
        "below",
        lambda: {name: n["below_target"] for name, n in per_job().items() if n["below_target"]},
    )


def prometheus() -> str:
    """The overall and per-job numbers as Prometheus gauges (over [targets] window_days)."""
    return _cached("prometheus", _prometheus)


def _prometheus() -> str:
    rows = [("", numbers())] + [(f'job="{name}"', n) for name, n in per_job().items()]
    series = (
        (
            "lightci_delivery_build_success_ratio",
            "Build success rate over the window.",
            lambda n: [("", n["build_success_rate"])],
        ),
        (
            "lightci_delivery_deploy_success_ratio",
            "Deploy success rate over the window.",
            lambda n: [("", n["deploy_success_rate"])],
        ),
        (
            "lightci_delivery_lead_time_seconds",
            "Push to deployed, p50 and p95.",
            lambda n: [
                ('quantile="0.5"', n["lead_time"]["p50"]),
                ('quantile="0.95"', n["lead_time"]["p95"]),
            ],
        ),
        (
            "lightci_delivery_queue_wait_seconds",
            "Queue wait, mean and p95.",
            lambda n: [
                ('stat="mean"', n["queue_wait"]["mean"]),
                ('quantile="0.95"', n["queue_wait"]["p95"]),
            ],
        ),
        (
            "lightci_delivery_slot_utilisation_ratio",
            "Mean share of slot time in use.",
            lambda n: [("", n["slot_utilisation_mean"])],
        ),
        (
            "lightci_delivery_timeouts",
            "Builds that timed out in the window.",
            lambda n: [("", sum(d["timeouts"] for d in n["timeouts_per_day"]))],
        ),
        (
            "lightci_delivery_expiries",
            "Builds that expired in the window.",
            lambda n: [("", sum(d["expiries"] for d in n["timeouts_per_day"]))],
        ),
    )
    lines = []
    for name, help_text, pick in series:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for job_label, n in rows:
            for extra, value in pick(n):
                if value is None:
                    continue
                labels = ",".join(x for x in (job_label, extra) if x)
                lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
    return "\n".join(lines) + "\n"
