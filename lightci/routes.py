"""The route to each job's live container: what the proxy serves and nginx/Caddy include.

Every web process reads the route from the job table (cached for ROUTE_TTL
seconds); the old container drains for [deploy] drain seconds, longer than any
process's cache.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from lightci.config import Settings
from lightci.models import LIVE, Deployment

ROUTE_TTL = 0.5  # seconds a web process may serve from its cached route


def upstream_files(cfg: Settings, job_name: str) -> tuple[Path, Path]:
    """HOME/run/upstreams/<job>.conf (nginx) and <job>.caddy (Caddy)."""
    base = cfg.run_dir / "upstreams"
    return base / f"{job_name}.conf", base / f"{job_name}.caddy"


# -- the worker's part --------------------------------------------------------


def live_deployment(job_name: str) -> Deployment | None:
    return (
        Deployment.select()
        .where(Deployment.job == job_name, Deployment.state == LIVE)
        .order_by(Deployment.switched_at.desc())
        .first()
    )


_routes: dict[str, tuple[float, str]] = {}
_routes_lock = threading.Lock()


def route(job_name: str) -> str:
    """host:port of the job's live container ('' when none), cached for ROUTE_TTL seconds.

    Every web process reads the route from the job table; the old container
    drains for [deploy] drain seconds, longer than any process's cache.
    """
    now = time.monotonic()
    cached = _routes.get(job_name)
    if cached is not None and now - cached[0] < ROUTE_TTL:
        return cached[1]
    live = live_deployment(job_name)
    address = live.address if live is not None else ""
    with _routes_lock:
        _routes[job_name] = (now, address)
    return address


def forget(job_name: str) -> None:
    """The next request reads the route again (after a switch, a restart, an undeploy)."""
    with _routes_lock:
        _routes.pop(job_name, None)


def write_upstream(cfg: Settings, job_name: str, address: str, deployment: Deployment) -> None:
    """Include files for nginx and Caddy in front of lightci; rewritten on every switch."""
    nginx, caddy = upstream_files(cfg, job_name)
    nginx.parent.mkdir(parents=True, exist_ok=True)
    about = (
        f"# lightci: the live container of job {job_name} ({deployment.image}, "
        f"slot {deployment.slot}, deployment {deployment.id}); rewritten on every switch\n"
    )
    upstream = re.sub(r"[^A-Za-z0-9_]", "_", f"lightci_{job_name}")
    _write_atomic(nginx, f"{about}upstream {upstream} {{\n    server {address};\n}}\n")
    _write_atomic(caddy, f"{about}reverse_proxy {address}\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- what the CLI, the API and the pages show ---------------------------------
