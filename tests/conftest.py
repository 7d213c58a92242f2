"""Shared fixtures: a fresh lightci home, jobs written by the test, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

# Test files import these from here too (`from tests.conftest import BIN, Server`).
from tests.helpers import (  # noqa: F401 - re-exported
    BIN,
    FINAL,
    REPO,
    free_port,
    pid_alive,
    wait_for_file,
    wait_gone,
    wait_until,
)
from tests.web_client import Answer, Server, WebClient, http  # noqa: F401 - re-exported


class Home:
    """A lightci home in a temp dir, with helpers to write jobs and read the job table."""

    def __init__(self, path: Path):
        self.path = path
        self.jobs = path / "jobs"
        self.jobs.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.configure()

    def configure(self, **builds) -> None:
        """Write lightci.toml; builds={'slots': 1, ...}. Sweeps every second in tests.

        Stages run unsandboxed unless a test asks (sandbox="auto"): many tests
        have their stages write or signal outside the build, which bwrap forbids.
        """
        values = {"slots": 2, "kill_grace": 1, "sandbox": "none", **builds}
        lines = ["[builds]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines += ["[upkeep]", "sweep_interval = 1"]
        self.path.joinpath("lightci.toml").write_text("\n".join(lines) + "\n")

    def job(self, name: str, toml: str = "", **scripts: str) -> Path:
        d = self.jobs / name
        d.mkdir(parents=True, exist_ok=True)
        d.joinpath("job.toml").write_text(textwrap.dedent(toml))
        for stage, body in scripts.items():
            p = d / f"{stage}.sh"
            p.write_text("#!/usr/bin/env bash\nset -eu\n" + textwrap.dedent(body))
            p.chmod(0o755)
        return d

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTCI_")}
        env["LIGHTCI_HOME"] = str(self.path)
        env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def cli(self, *args: str, check: bool = True, timeout: float = 60, **kw):
        result = subprocess.run(
            [str(BIN / "lightci"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kw,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"lightci {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def trigger(self, job: str, *args: str) -> int:
        return int(self.cli("trigger", job, *args).stdout.split()[0])

    def start_worker(self, *cmd: str, workers: int = 2) -> subprocess.Popen:
        """A real worker process; by default a plain `huey_consumer lightci.tasks.huey`."""
        argv = list(cmd) or [
            str(BIN / "huey_consumer"),
            "lightci.tasks.huey",
            "-k",
            "thread",
            "-w",
            str(workers),
        ]
        log = open(self.path / f"worker-{len(self.procs)}.log", "ab")
        proc = subprocess.Popen(
            argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        self.procs.clear()
        # Build stages run in sessions of their own: a test that failed half-way
        # may leave some behind with no worker to end them. Their environment
        # points into this home.
        marker = f"={self.path}/".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path / "lightci.db", timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def build(self, build_id: int) -> dict:
        with self.db() as conn:
            row = conn.execute("SELECT * FROM build WHERE id = ?", (build_id,)).fetchone()
        return dict(row)

    def builds(self) -> list[dict]:
        with self.db() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM build ORDER BY id")]

    def wait_for(self, ids, states=FINAL, timeout: float = 60) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            rows = [self.build(i) for i in ids]
            if all(r["status"] in states for r in rows):
                return rows
            if time.time() > deadline:
                raise AssertionError(
                    f"timed out waiting for {states}: {[(r['id'], r['status']) for r in rows]}"
                )
            time.sleep(0.05)

    def log(self, build_id: int) -> str:
        row = self.build(build_id)
        return (self.path / "builds" / row["job"] / str(row["number"]) / "log.txt").read_text()

    def pending_wakeups(self) -> int:
        """Wake-ups no worker has taken yet (0: every worker that was woken has looked)."""
        try:
            with sqlite3.connect(self.path / "huey.db", timeout=30) as conn:
                return conn.execute("SELECT COUNT(*) FROM task").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.fixture
def home(tmp_path):
    h = Home(tmp_path / "home")
    yield h
    h.stop_all()


@pytest.fixture
def scheduler(home) -> subprocess.Popen:
    """`lightci scheduler` for the home (sweeps, expiry, retention), started before the test."""
    return home.start_worker(str(BIN / "lightci"), "scheduler")


@pytest.fixture
def bound(home, monkeypatch):
    """This process's models bound to the test home, as a lightci process binds them."""
    for name in list(os.environ):
        if name.startswith("LIGHTCI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LIGHTCI_HOME", str(home.path))
    from lightci import models
    from lightci.config import settings

    models.bind(settings())
    yield home
    if not models.db.is_closed():
        models.db.close()


# -- Docker: a real engine, images built FROM scratch with Debian's static busybox ------------

BUSYBOX = Path("/bin/busybox")
BUSYBOX_IMAGE = "lightci-test/busybox:1"


@pytest.fixture
def schedulers(bound):
    """The bound home; the schedulers a test starts are stopped after it."""
    started = []
    yield started
    for scheduler in started:
        scheduler.shutdown(wait=False)


@pytest.fixture(scope="session")
def docker_client():
    """The engine scripts/test started (or DOCKER_HOST's); skips the test when none answers."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers ({exc}); ./scripts/test starts one as root")
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client, tmp_path_factory) -> str:
    """A FROM-scratch image with a static busybox and its applets in /bin."""
    if not BUSYBOX.exists():
        pytest.skip("needs a static /bin/busybox (Debian package busybox-static)")
    context = tmp_path_factory.mktemp("busybox-image")
    (context / "busybox").write_bytes(BUSYBOX.read_bytes())
    (context / "busybox").chmod(0o755)
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        'RUN ["/bin/busybox", "mkdir", "-p", "/root", "/tmp"]\n'
    )
    try:
        docker_client.images.build(path=str(context), tag=BUSYBOX_IMAGE, rm=True)
    except Exception as exc:  # a dynamic busybox cannot run in an empty image
        pytest.skip(f"cannot build a busybox image from {BUSYBOX} (is it static?): {exc}")
    return BUSYBOX_IMAGE


# -- the web face: the Bottle app in this process, and a real `lightci serve` -----


@pytest.fixture
def web(bound):
    """The Bottle app bound to the test home; builds stay queued (no worker runs)."""
    from lightci.web.app import make_app

    return WebClient(make_app())


@pytest.fixture
def serve(home):
    """Start `lightci serve` (or `lightci web`, web=True) for the home -> Server."""
    return lambda env=None, workers=2, web=False: Server(home, env, workers, web)
