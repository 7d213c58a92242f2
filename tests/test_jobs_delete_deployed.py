"""Deleting a deployed job: its container, route, images, rows and files are all gone."""

from __future__ import annotations

import pytest

from lightci.models import Deployment
from tests.conftest import http, wait_until
from tests.test_deploy import app_containers, app_job, deploy, server  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("busybox_image")


def test_delete_a_job_while_its_deployment_is_live(home, server, app_job, docker_client, bound):  # noqa: F811
    job = app_job
    assert deploy(home, job, "v1")["status"] == "success"
    assert server.get(f"/apps/{job}/") == (200, "v1\n")
    assert app_containers(docker_client, job)
    images = docker_client.images.list(name=f"lightci/{job}")
    assert images
    gone = http("DELETE", f"{server.base}/api/jobs/{job}")
    assert gone.status == 200, gone.text
    assert gone.json()["containers"] >= 1
    assert app_containers(docker_client, job) == []
    assert docker_client.images.list(name=f"lightci/{job}") == []
    assert not (home.path / "run" / "upstreams" / f"{job}.conf").exists()
    wait_until(lambda: server.get(f"/apps/{job}/")[0] != 200, "the route to go away")
    assert Deployment.select().where(Deployment.job == job).count() == 0
    assert home.builds() == []
    for path in (f"jobs/{job}", f"builds/{job}", f"caches/{job}"):
        assert not (home.path / path).exists(), path
