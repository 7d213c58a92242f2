"""One health check of a deployed container: a GET of its health path, or why not."""

from __future__ import annotations

from typing import Any

from lightci.container import client, docker_error
from lightci.models import Deployment


def health_check(deployment: Deployment, deploy: dict[str, Any]) -> str | None:
    """One GET of the health path; None when it answers 2xx, else what went wrong."""
    import http.client  # with email and ssl, 2 MB a process that deploys nothing does without

    try:
        container = client().containers.get(deployment.container)
    except docker_error("NotFound"):
        return "container is gone"
    if container.status not in ("running", "created", "restarting"):
        return f"container exited with code {container.attrs['State'].get('ExitCode')}"
    host, _, port = deployment.address.rpartition(":")
    timeout = deploy["health_timeout"]  # README: the seconds one try may take
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", deploy["health"], headers={"User-Agent": "lightci-health"})
        response = conn.getresponse()
        response.read()
        if 200 <= response.status < 300:
            return None
        return f"HTTP {response.status} {response.reason}".strip()
    except (OSError, http.client.HTTPException) as exc:
        return _describe(exc)
    finally:
        conn.close()


def _describe(exc: Exception) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
