"""Blue/green deploys on a real engine, served by a real `lightci serve` (web, worker, scheduler).

The app is busybox httpd in a FROM-scratch image; its version and whether it
has a /health file come from the build's params.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import subprocess
import threading
import urllib.request

import pytest

from .conftest import BIN, free_port, wait_until

pytestmark = pytest.mark.usefixtures("busybox_image")

APP = """\
cp /bin/busybox busybox
mkdir -p www
echo "$VERSION" > www/index.html
if [ "$HEALTHY" = yes ]; then echo ok > www/health; fi
cat > Dockerfile <<'EOF'
FROM scratch
COPY busybox /bin/busybox
COPY www /www
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
EOF
"""


class Server:
    """`lightci serve` on a loopback port, and what a user asks of it."""

    def __init__(self, home, port: int):
        self.home, self.port = home, port
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def post(self, path: str) -> tuple[int, dict]:
        req = urllib.request.Request(self.base + path, data=b"{}", method="POST")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def server(home, docker_client):
    """`lightci serve`: web, worker and scheduler in one process."""
    port = free_port()
    home.start_worker(str(BIN / "lightci"), "serve", "--port", str(port), "--workers", "2")
    yield _answering(Server(home, port))


@pytest.fixture
def procfile(home, docker_client, scheduler):
    """The Procfile's three processes: the route reaches the web process through the job table."""
    port = free_port()
    home.start_worker(str(BIN / "lightci"), "web", "--port", str(port))
    home.start_worker(str(BIN / "lightci"), "worker", "--workers", "2")
    yield _answering(Server(home, port))


def _answering(srv: Server) -> Server:
    def healthy() -> bool:
        try:
            return srv.get("/health")[0] == 200
        except OSError:
            return False

    wait_until(healthy, "lightci to answer /health", timeout=30)
    return srv


@pytest.fixture
def app_job(home, docker_client):
    """A deploy job with a name of its own, and its containers and images removed afterwards."""
    name = f"app-{secrets.token_hex(3)}"
    home.job(
        name,
        """
        [params]
        version = "v1"
        healthy = "yes"
        [deploy]
        port = 8080
        health = "/health"
        health_retries = 3
        health_interval = 0.5
        drain = 2
        monitor_interval = 0
        """,
        build=APP,
    )
    yield name
    for container in docker_client.containers.list(
        all=True, filters={"label": f"lightci.job={name}"}
    ):
        container.remove(force=True)
    for image in docker_client.images.list(name=f"lightci/{name}"):
        docker_client.images.remove(image.id, force=True)


def app_containers(docker_client, job: str) -> list:
    from lightci.container import containers

    return containers(f"lightci.job={job}", "lightci.role=app")


def deploy(home, job: str, version: str, healthy: str = "yes") -> dict:
    build_id = home.trigger(job, "-p", f"version={version}", "-p", f"healthy={healthy}")
    [row] = home.wait_for([build_id], timeout=120)
    return row


def test_blue_green_switch_loses_no_request_rejects_a_bad_image_and_rolls_back(
    home, procfile, app_job, docker_client
):
    job, server = app_job, procfile
    row = deploy(home, job, "v1")
    assert row["status"] == "success", home.log(row["id"])
    assert server.get(f"/apps/{job}/") == (200, "v1\n")
    upstream = home.path / "run" / "upstreams" / f"{job}.conf"
    assert f"upstream lightci_{job.replace('-', '_')} {{" in upstream.read_text()

    # v2 while two clients keep asking: every request is answered, by v1 then v2.
    seen: list[str] = []
    failures: list[str] = []
    done = threading.Event()

    def ask() -> None:
        for _ in range(5000):  # bounded, even if the deploy never ends
            if done.is_set():
                return
            try:
                status, body = server.get(f"/apps/{job}/")
            except OSError as exc:
                failures.append(repr(exc))
                continue
            if status != 200 or body not in ("v1\n", "v2\n"):
                failures.append(f"{status} {body[:200]}")
            seen.append(body)

    clients = [threading.Thread(target=ask) for _ in range(2)]
    for t in clients:
        t.start()
    build_id = home.trigger(job, "-p", "version=v2")
    try:
        [row] = home.wait_for([build_id], timeout=120)
        # Web processes cache the route for half a second: v2 shows within that.
        wait_until(lambda: seen[-10:].count("v2\n") == 10, "v2 to answer every request")
    finally:
        done.set()
        for t in clients:
            t.join()
    assert row["status"] == "success", home.log(build_id)
    assert failures == []
    assert seen[0] == "v1\n"
    assert server.get(f"/apps/{job}/") == (200, "v2\n")
    wait_until(lambda: len(app_containers(docker_client, job)) == 1, "the old container stops")

    # v3 has no /health: rejected, the new container removed, v2 still serving alone.
    row = deploy(home, job, "v3", healthy="no")
    assert row["status"] == "failed"
    assert row["error"].startswith("health check failed after 3 tries: HTTP 404"), row["error"]
    assert server.get(f"/apps/{job}/") == (200, "v2\n")
    [left] = app_containers(docker_client, job)
    assert left.status == "running"

    # Rollback goes back to the image before v2, through the same checked switch.
    status, body = server.post(f"/api/jobs/{job}/rollback")
    assert status == 202, body
    assert body["state"] == "checking" and body["trigger"] == "rollback (api)"
    wait_until(lambda: server.get(f"/apps/{job}/") == (200, "v1\n"), "the rollback to v1")

    status, body = server.get(f"/api/deployments?job={job}")
    states = [(d["state"], d["trigger"].split(" ")[0]) for d in json.loads(body)["deployments"]]
    assert states[0] == ("live", "rollback")
    assert ("failed", "build") in states
    listed = home.cli("deployments", job).stdout
    assert "rollback" in listed and "failed" in listed


def test_cancel_during_health_checks_removes_the_new_container_and_keeps_the_old(
    home, server, app_job, docker_client
):
    job = app_job
    toml = home.jobs / job / "job.toml"
    assert deploy(home, job, "v1")["status"] == "success"
    toml.write_text(toml.read_text().replace("health_retries = 3", "health_retries = 1000"))
    build_id = home.trigger(job, "-p", "version=v2", "-p", "healthy=no")
    home.wait_for([build_id], states={"deploying"}, timeout=120)
    wait_until(lambda: len(app_containers(docker_client, job)) == 2, "the new container")
    home.cli("cancel", str(build_id))
    [row] = home.wait_for([build_id], timeout=60)
    assert row["status"] == "cancelled"
    assert row["error"].startswith("cancelled by user")
    [left] = app_containers(docker_client, job)
    assert left.labels["lightci.slot"] == "blue"
    assert server.get(f"/apps/{job}/") == (200, "v1\n")


def test_a_worker_killed_while_building_the_image_leaves_the_build_lost(
    home, app_job, busybox_image, docker_client, scheduler
):
    home.configure(orphan_after=2)
    job_dir = home.jobs / app_job
    (job_dir / "build.sh").write_text(
        f"#!/bin/sh\nprintf 'FROM {busybox_image}\\nRUN sleep 60\\n' > Dockerfile\n"
    )
    worker = home.start_worker(str(BIN / "lightci"), "worker", "--workers", "1")
    build_id = home.trigger(app_job)
    home.wait_for([build_id], states={"deploying"}, timeout=60)
    wait_until(lambda: "Step 2/" in home.log(build_id), "the image build to start")
    os.killpg(worker.pid, signal.SIGKILL)
    [row] = home.wait_for([build_id], timeout=60)
    assert row["status"] == "lost"
    assert row["error"].startswith("deploy interrupted: worker ")
    assert scheduler.poll() is None


def test_cli_rollback_then_undeploy_stops_the_containers_and_frees_the_route(
    home, server, app_job, docker_client
):
    job = app_job
    assert deploy(home, job, "v1")["status"] == "success"
    assert deploy(home, job, "v2")["status"] == "success"
    assert server.get(f"/apps/{job}/") == (200, "v2\n")
    rolled = home.cli("rollback", job)
    assert f"/apps/{job}/ serves lightci/{job}:build-1 again" in rolled.stdout
    assert server.get(f"/apps/{job}/") == (200, "v1\n")
    home.cli("undeploy", job)
    assert app_containers(docker_client, job) == []
    assert not (home.path / "run" / "upstreams" / f"{job}.conf").exists()

    def gone() -> bool:
        try:
            return server.get(f"/apps/{job}/")[0] == 503
        except TimeoutError:  # a request that reached the removed container before the route
            return False  # went (see the closing note: the proxy's connect timeout)

    wait_until(gone, "the route to go away", 120)


def test_a_live_app_that_stops_answering_is_marked_unhealthy_and_removing_deploy_stops_it(
    home, server, app_job, docker_client
):
    job = app_job
    toml = home.jobs / job / "job.toml"
    toml.write_text(toml.read_text().replace("monitor_interval = 0", "monitor_interval = 0.5"))
    assert deploy(home, job, "v1")["status"] == "success"
    [app] = app_containers(docker_client, job)
    assert app.exec_run(["/bin/busybox", "rm", "/www/health"]).exit_code == 0

    gauge = f'lightci_deployment_healthy{{job="{job}",slot="blue"}}'
    wait_until(lambda: f"{gauge} 0" in server.get("/metrics")[1], "the unhealthy gauge")
    status, page = server.get("/")
    assert "Unhealthy deployments" in page and job in page
    assert server.get(f"/apps/{job}/") == (200, "v1\n")  # still routed: nothing better to serve

    status, page = server.get(f"/jobs/{job}")
    assert status == 200 and "Deployments" in page and "unhealthy" in page

    # Deleting the job's [deploy] takes it down, at the scheduler clock's next turn (a minute).
    toml.write_text(toml.read_text().split("[deploy]")[0])
    wait_until(lambda: app_containers(docker_client, job) == [], "the containers to stop", 150)
    assert server.get(f"/apps/{job}/")[0] == 503


def test_upkeep_keeps_the_last_images_of_a_job_and_prunes_older_ones(
    home, server, app_job, docker_client
):
    job = app_job
    toml = home.jobs / job / "job.toml"
    toml.write_text(toml.read_text().replace("[deploy]\n", "[deploy]\nkeep_images = 2\n"))
    for version in ("v1", "v2", "v3"):
        assert deploy(home, job, version)["status"] == "success"
    prune = "from lightci import config, deploy, models; models.bind(config.settings()); " + (
        "print(deploy.prune_images())"
    )
    pruned = subprocess.run(
        [str(BIN / "python"), "-c", prune], env=home.env, capture_output=True, text=True
    )
    assert pruned.stdout.strip() == str([f"lightci/{job}:build-1"]), pruned.stderr
    tags = sorted(
        t for image in docker_client.images.list(name=f"lightci/{job}") for t in image.tags
    )
    assert tags == [f"lightci/{job}:build-2", f"lightci/{job}:build-3"]


def test_restart_unhealthy_restarts_a_live_container_that_stops_answering(
    home, server, app_job, docker_client
):
    job = app_job
    toml = home.jobs / job / "job.toml"
    toml.write_text(
        toml.read_text().replace(
            "monitor_interval = 0", "monitor_interval = 0.5\nrestart_unhealthy = true"
        )
    )
    assert deploy(home, job, "v1")["status"] == "success"
    [app] = app_containers(docker_client, job)
    started = app.attrs["State"]["StartedAt"]
    assert app.exec_run(["/bin/busybox", "rm", "/www/health"]).exit_code == 0

    def restarted() -> bool:
        app.reload()
        return app.attrs["State"]["StartedAt"] != started

    wait_until(restarted, "the unhealthy container to be restarted")
    assert server.get(f"/apps/{job}/") == (200, "v1\n")


def test_push_lands_in_the_local_registry(home, app_job, tmp_path, docker_client):
    registry = _registry(tmp_path)
    repository = f"127.0.0.1:{registry}/lightci/{app_job}"
    toml = home.jobs / app_job / "job.toml"
    toml.write_text(toml.read_text().replace("[deploy]\n", f'[deploy]\npush = "{repository}"\n'))
    home.start_worker(str(BIN / "lightci"), "serve", "--port", str(free_port()))
    row = deploy(home, app_job, "v1")
    assert row["status"] == "success", home.log(row["id"])
    with urllib.request.urlopen(
        f"http://127.0.0.1:{registry}/v2/lightci/{app_job}/tags/list", timeout=10
    ) as response:
        tags = json.loads(response.read())["tags"]
    assert tags == [f"build-{row['id']}"]


def _registry(tmp_path) -> int:
    """Debian's docker-registry on a loopback port, storing under tmp_path."""
    binary = "/usr/bin/docker-registry"
    import os

    if not os.access(binary, os.X_OK):
        pytest.skip("needs Debian's docker-registry package for the push test")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _registries.append(proc)
    wait_until(lambda: _answers(f"http://127.0.0.1:{port}/v2/"), "the registry to answer")
    return port


_registries: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _stop_registries():
    yield
    while _registries:
        proc = _registries.pop()
        proc.kill()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


SLOW_IMAGE = """\
cp /bin/busybox busybox
cat > Dockerfile <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sleep", "90"]
EOF
"""


def test_a_cancel_during_a_silent_image_build_step_ends_the_build_at_once(home, server):
    """The engine sends nothing while a RUN step runs: a cancel (or a timeout) waited for
    the step to end, because the build's output was read between the engine's events."""
    name = f"slow-{secrets.token_hex(3)}"
    home.job(name, "[deploy]\nport = 8080\n", build=SLOW_IMAGE)
    build_id = home.trigger(name)
    log = home.path / "builds" / name / "1" / "log.txt"
    wait_until(lambda: log.exists() and "sleep" in log.read_text(), "the RUN step", timeout=120)
    home.cli("cancel", str(build_id))
    [row] = home.wait_for([build_id], timeout=30)  # the step alone would take 90 s
    assert row["status"] == "cancelled", home.log(build_id)
