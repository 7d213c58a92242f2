"""Delivery numbers on a seeded history with known answers (in-process, no worker)."""

from __future__ import annotations

import math
import time

import pytest

HOUR = 3600


@pytest.fixture
def history(web, home):
    """Two jobs' builds, deploys and bumps at known times before `now` (on the hour)."""
    from lightci.models import Build, Bump, Deployment

    for name in ("a", "b"):
        home.job(name, "", build="true\n")
    now = math.floor(time.time() / HOUR) * HOUR
    number = {"a": 0, "b": 0}

    def build(job, status, queued, started=None, finished=None, trigger="cli"):
        number[job] += 1
        return Build.create(
            job=job,
            number=number[job],
            key=f"{job}:",
            status=status,
            trigger=trigger,
            queued_at=now - queued,
            started_at=None if started is None else now - started,
            finished_at=None if finished is None else now - finished,
            timeout=60,
            queue_timeout=60,
        )

    def deployment(b, state, created, switched=None):
        Deployment.create(
            job=b.job,
            build_id=b.id,
            image="i",
            image_id="i",
            slot="blue",
            state=state,
            created_at=now - created,
            switched_at=None if switched is None else now - switched,
        )

    first = build("a", "success", 5000, 4990, 4900)  # waited 10 s
    deployment(first, "retired", 4890, 4800)  # lead time 200 s
    second = build("a", "success", 4000, 3970, 3900)  # waited 30 s
    Bump.create(
        job="a",
        build_id=second.id,
        kind="bump",
        state="pushed",
        repo="r",
        branch="main",
        file="values.yaml",
        created_at=now - 3900,
    )  # lead time 100 s
    build("a", "failed", 3000, 2950, 2900)  # waited 50 s
    build("a", "timeout", 2000, 1990, 1000)  # waited 10 s
    build("a", "expired", 1500, None, 900)
    build("a", "cancelled", 800, 790, 780)  # waited 10 s; not in the success rate
    build("a", "success", 200000, 199990, 199000)  # outside a one-day window
    build("a", "success", 700, 690, 680, trigger="rollback")  # an action, not a build
    failed_deploy = build("b", "failed", 600, 600, 500)
    deployment(failed_deploy, "failed", 550)
    return now


def test_rates_lead_time_waits_utilisation_and_timeouts_have_known_values(history):
    from lightci.delivery import numbers

    a = numbers("a", "1d", now=history)
    assert (a["builds"], a["build_success_rate"]) == (4, 0.5)
    assert (a["deploys"], a["deploy_success_rate"]) == (2, 1.0)
    assert a["lead_time"] == {"count": 2, "p50": 100, "p95": 200}
    assert a["queue_wait"] == {"count": 5, "mean": 22, "p95": 50}
    today = time.strftime("%Y-%m-%d", time.gmtime(history - 1000))
    days = {d["day"]: d for d in a["timeouts_per_day"]}
    assert days[today] == {"day": today, "timeouts": 1, "expiries": 1}
    assert sum(d["timeouts"] + d["expiries"] for d in a["timeouts_per_day"]) == 2
    assert a["below_target"] == ["build success 50% < 95%"]

    every = numbers(None, "1d", now=history)
    assert (every["builds"], every["build_success_rate"]) == (5, 0.4)
    assert (every["deploys"], every["deploy_success_rate"]) == (3, 0.6667)
    hours = every["slot_utilisation"]
    assert len(hours) == 24
    # Last hour: 50 + 990 + 10 + 100 busy seconds of 2 slots x 3600; the one before: 90 + 70.
    assert hours[-1]["ratio"] == round(1150 / 7200, 4)
    assert hours[-2]["ratio"] == round(160 / 7200, 4)
    assert sum(h["ratio"] for h in hours[:-2]) == 0


def test_api_page_prometheus_and_dashboard_show_the_numbers_and_flag_jobs_below_target(
    history, web, home
):
    home.path.joinpath("lightci.toml").write_text(
        '[builds]\nsandbox = "none"\n[targets]\nbuild_success = 40\ndeploy_success = 99\n'
    )
    answer = web.get("/api/metrics?window=1d").json()
    assert answer["overall"]["build_success_rate"] == 0.4
    assert answer["jobs"]["a"]["lead_time"]["p95"] == 200
    assert answer["jobs"]["a"]["below_target"] == []
    assert answer["jobs"]["b"]["below_target"] == [
        "build success 0% < 40%",
        "deploy success 0% < 99%",
    ]
    assert web.get("/api/metrics/delivery?job=a&days=1").json()["queue_wait"]["mean"] == 22
    assert web.get("/api/metrics?window=soon").status == 400
    metrics = web.get("/metrics").text
    # /metrics covers [targets] window_days (30): the two-day-old success counts there.
    assert 'lightci_delivery_build_success_ratio{job="a"} 0.6' in metrics
    assert 'lightci_delivery_lead_time_seconds{job="a",quantile="0.95"} 200' in metrics
    page = web.get("/metrics-page?window=1d").text
    assert 'id="utilisation"' in page and 'id="timeouts"' in page
    assert page.count("below-target") == 1
    dashboard = web.get("/").text
    assert 'id="below-target"' in dashboard and 'href="/jobs/b"' in dashboard
    assert "deploy success 0% &lt; 99%" in dashboard


def test_a_deploy_that_failed_before_its_container_counts_as_a_failed_deploy(history):
    """No engine, or a Dockerfile that does not build: no Deployment row, but a deploy."""
    from lightci.delivery import numbers
    from lightci.models import Build

    Build.create(
        job="b",
        number=9,
        key="b:",
        status="failed",
        stage="deploy",
        trigger="cli",
        queued_at=history - 400,
        started_at=history - 390,
        finished_at=history - 380,
        timeout=60,
        queue_timeout=60,
    )
    b = numbers("b", "1d", now=history)
    assert (b["deploys"], b["deploy_success_rate"]) == (2, 0.0)
    # A release whose [[images]] failed (a registry down): nothing went out either.
    Build.update(number=10, stage="images").where(Build.number == 9, Build.job == "b").execute()
    assert numbers("b", "1d", now=history)["deploys"] == 2
