"""Builds inside containers ([docker]) on a real engine, with real worker processes.

The image is FROM scratch with a static busybox, so nothing needs a registry.
"""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("busybox_image")


def docker_job(home, name: str, toml: str, script: str) -> None:
    """A job whose one stage is a plain sh script (the image has no bash)."""
    d = home.job(name, toml)
    (d / "build.sh").write_text("set -eu\n" + textwrap.dedent(script))


def containers_of(docker_client, build_id: int) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"lightci.build={build_id}"})


def test_a_docker_job_runs_inside_its_image_and_fills_the_mounted_cache(home, busybox_image):
    docker_job(
        home,
        "inside",
        f"""
        cache = "job"
        [params]
        flavor = "dev"
        [docker]
        image = "{busybox_image}"
        caches = ["npm", "pip"]
        """,
        """
        # The host has /etc/os-release; the FROM-scratch image has no /etc at all.
        [ -e /etc/os-release ] || echo "inside the image, as uid $(id -u)"
        echo "npm cache at $npm_config_cache"
        echo cached > /root/.npm/marker
        echo "$FLAVOR $LIGHTCI_JOB" > "$LIGHTCI_WORKSPACE/out.txt"
        mkdir -p "$LIGHTCI_WORKSPACE/made/by/container"
        """,
    )
    home.start_worker()
    build_id = home.trigger("inside", "-p", "flavor=prod")
    [row] = home.wait_for([build_id])
    log = home.log(build_id)
    assert row["status"] == "success", log
    assert f"inside the image, as uid {os.getuid()}" in log
    assert "npm cache at /root/.npm" in log
    cache = home.path / "caches" / "inside" / "_job" / "npm" / "marker"
    assert cache.read_text() == "cached\n"
    workspace = home.path / "builds" / "inside" / "1" / "workspace"
    assert (workspace / "out.txt").read_text() == "prod inside\n"
    # What the container wrote belongs to lightci's user, so lightci can remove it.
    made = workspace / "made" / "by" / "container"
    assert made.stat().st_uid == os.getuid()
    assert containers_of(home.docker, build_id) == []


def test_a_stage_run_as_another_user_leaves_files_lightci_owns(home, busybox_image):
    docker_job(
        home,
        "asuser",
        f"""
        [docker]
        image = "{busybox_image}"
        user = "1234:1234"
        """,
        """
        id -u > "$LIGHTCI_WORKSPACE/uid.txt"
        mkdir -p "$LIGHTCI_WORKSPACE/deep/dir"
        """,
    )
    workspace = home.path / "builds" / "asuser" / "1" / "workspace"
    workspace.mkdir(parents=True)
    workspace.chmod(0o777)  # so uid 1234 may write into it
    home.start_worker()
    build_id = home.trigger("asuser")
    [row] = home.wait_for([build_id])
    assert row["status"] == "success", home.log(build_id)
    assert (workspace / "uid.txt").read_text() == "1234\n"
    for path in (workspace / "uid.txt", workspace / "deep" / "dir"):
        assert path.stat().st_uid == os.getuid(), path
    assert containers_of(home.docker, build_id) == []


def test_the_image_entrypoint_does_not_hijack_the_stage(home, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(f'FROM {busybox_image}\nENTRYPOINT ["/bin/false"]\n')
    image = "lightci-test/entrypoint:1"
    home.docker.images.build(path=str(tmp_path), tag=image, rm=True)
    docker_job(home, "tool", f'[docker]\nimage = "{image}"\n', "echo the stage ran\n")
    home.start_worker()
    build_id = home.trigger("tool")
    [row] = home.wait_for([build_id])
    assert row["status"] == "success", home.log(build_id)
    assert "the stage ran" in home.log(build_id)


def test_a_missing_image_fails_the_build_naming_the_image_and_the_engine_error(home):
    docker_job(
        home,
        "noimage",
        """
        [docker]
        image = "lightci-test/does-not-exist:1"
        """,
        "echo never\n",
    )
    home.start_worker()
    build_id = home.trigger("noimage")
    [row] = home.wait_for([build_id])
    assert row["status"] == "failed"
    assert "image 'lightci-test/does-not-exist:1' is not available: " in row["error"]
    engine_says = row["error"].split("is not available: ", 1)[1]
    assert engine_says.strip(), row["error"]
    assert "never" not in home.log(build_id).replace("echo never", "")


def test_cancel_stops_and_removes_the_container(home, busybox_image):
    docker_job(
        home,
        "slow",
        f"""
        [docker]
        image = "{busybox_image}"
        """,
        """
        echo started
        sleep 300
        """,
    )
    home.start_worker()
    build_id = home.trigger("slow")
    deadline = time.time() + 60
    while "started" not in _log_or_empty(home, build_id):
        assert time.time() < deadline, "the stage never started"
        time.sleep(0.1)
    assert len(containers_of(home.docker, build_id)) == 1
    home.cli("cancel", str(build_id))
    [row] = home.wait_for([build_id])
    assert row["status"] == "cancelled"
    assert containers_of(home.docker, build_id) == []


def test_a_timeout_stops_and_removes_the_container(home, busybox_image):
    docker_job(
        home,
        "stuck",
        f"""
        timeout = 2
        [docker]
        image = "{busybox_image}"
        """,
        "sleep 300\n",
    )
    home.start_worker()
    build_id = home.trigger("stuck")
    [row] = home.wait_for([build_id])
    assert (row["status"], row["error"]) == ("timeout", "timeout after 2 s")
    # Removed before the build ended; a busy engine may take a few tries (container._remove).
    wait_until(lambda: containers_of(home.docker, build_id) == [], "the container's removal", 60)


def test_a_build_over_its_memory_limit_fails_as_out_of_memory(home, busybox_image):
    docker_job(
        home,
        "hungry",
        f"""
        memory = "32M"
        [docker]
        image = "{busybox_image}"
        """,
        """
        # tail keeps its last "line" in memory: 200 MB of zeros without a newline.
        head -c 200000000 /dev/zero | tail > /dev/null
        echo survived
        """,
    )
    home.start_worker()
    build_id = home.trigger("hungry")
    [row] = home.wait_for([build_id])
    assert row["status"] == "failed", home.log(build_id)
    assert row["error"] == "out of memory (limit 32M)"
    assert containers_of(home.docker, build_id) == []


def _log_or_empty(home, build_id: int) -> str:
    try:
        return home.log(build_id)
    except FileNotFoundError:
        return ""


@pytest.fixture(autouse=True)
def _docker_on_home(home, docker_client):
    home.docker = docker_client
