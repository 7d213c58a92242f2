"""lightci's own image: built from the Dockerfile on a locally made base, run, healthy."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.conftest import BIN, REPO

IMAGE = "lightci-test/own:1"


def test_the_image_builds_runs_as_non_root_and_its_healthcheck_says_healthy(
    tmp_path, docker_client
):
    made = subprocess.run(
        [str(REPO / "scripts" / "base-image")], capture_output=True, text=True, timeout=600
    )
    if made.returncode != 0:
        pytest.skip(f"scripts/base-image could not make the base image: {made.stderr.strip()}")
    context = tmp_path / "context"
    context.mkdir()
    for name in ("lightci", "views", "jobs"):
        shutil.copytree(REPO / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "Dockerfile", ".dockerignore"):
        shutil.copy(REPO / name, context / name)
    # No package index is reachable from inside a build here: the image installs from
    # wheels made on the host, as an offline user would.
    wheels = context / "wheels"
    pip = [str(BIN / "pip"), "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "-w", str(wheels), str(context)], check=True, timeout=300)
    subprocess.run(
        [*pip, "download", "-d", str(wheels), "setuptools>=61", "wheel"], check=True, timeout=300
    )
    docker_client.images.build(
        path=str(context),
        tag=IMAGE,
        rm=True,
        forcerm=True,
        buildargs={"PIP_ARGS": "--no-index --find-links /src/wheels"},
    )
    container = docker_client.containers.run(IMAGE, detach=True, labels={"lightci-test": "own"})
    try:
        deadline = time.time() + 180
        while True:
            container.reload()
            state = container.attrs["State"]
            health = state.get("Health", {}).get("Status")
            if health == "healthy":
                break
            assert state["Status"] == "running", container.logs().decode()[-2000:]
            assert health != "unhealthy", state["Health"]["Log"][-1:]
            assert time.time() < deadline, f"not healthy after 180 s: {health}"
            time.sleep(0.5)
        config = container.attrs["Config"]
        assert config["User"] == "10001:10001"
        assert "/var/lib/lightci" in config["Volumes"]
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        assert "/health" in " ".join(config["Healthcheck"]["Test"])
    finally:
        container.remove(force=True, v=True)


def test_compose_bounds_the_logs_and_restarts_the_service():
    from ruamel.yaml import YAML

    service = YAML(typ="safe").load((REPO / "compose.yaml").read_text())["services"]["lightci"]
    assert service["restart"] == "unless-stopped"
    assert service["logging"]["options"] == {"max-size": "10m", "max-file": "3"}
    assert service["volumes"][0].endswith(":/var/lib/lightci")
