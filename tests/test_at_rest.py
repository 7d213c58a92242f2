"""lightci at rest, as an operator running it beside the apps meets it: an idle server
sleeps until work is due, stops at once when asked, and loads no docker it does not use.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import http.server
import importlib.util
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from tests.conftest import BIN, free_port, wait_until


def test_an_idle_scheduler_runs_nothing_more_often_than_every_second(schedulers):
    """No build, no deployment, an empty outbox: each job sleeps until it could have work."""
    from lightci import healthchecks, sender
    from lightci import scheduler as upkeep

    scheduler = upkeep.start()
    schedulers.append(scheduler)
    wait_until(lambda: None not in scheduler.waits().values(), "every paced job to run once")
    waits = scheduler.waits()
    assert min(waits.values()) >= 1, waits
    # Nothing to deliver or to check: the longest waits, not a look every second.
    assert waits["lightci.sender.send_due"] == sender.LONGEST
    assert waits["lightci.healthchecks.check_due"] == healthchecks.LONGEST


def test_a_paced_job_runs_at_once_when_woken_and_sleeps_until_due_otherwise(schedulers):
    from lightci.schedule import Scheduler, paced

    ran = []
    woken = threading.Event()

    def deliver() -> float:
        ran.append(time.time())
        return time.time() + 3600  # nothing due for an hour

    scheduler = Scheduler([paced(600, deliver, woken)]).start()
    schedulers.append(scheduler)
    wait_until(lambda: len(ran) == 1, "the first run")
    wait_until(
        lambda: scheduler.waits()[f"{__name__}.{deliver.__qualname__}"] is not None, "a wait"
    )
    assert scheduler.waits()[f"{__name__}.{deliver.__qualname__}"] == 600  # capped at its longest
    woken.set()  # e.g. deploy.launch started a container to check
    wait_until(lambda: len(ran) == 2, "the run a wake-up asks for")


def test_an_idle_outbox_and_deploy_check_say_nothing_is_due(bound):
    from lightci import healthchecks, sender
    from lightci.schedule import Scheduler

    assert sender.send_due() is None and not sender.due()
    assert healthchecks.check_due() is None and not healthchecks.due()
    now = time.time()
    due = Scheduler([]).tick()
    assert due % 60 == 0 and now < due <= now + 60  # cron's next possible slot


def test_while_a_build_is_about_the_outbox_and_deploy_checks_keep_their_pace(bound):
    """Another process's build may record statuses or deploy at any moment."""
    from lightci import builds, healthchecks, sender

    bound.job("app", build="true")
    builds.trigger("app")  # queued; no worker runs
    now = time.time()
    assert now < sender.send_due() <= now + sender.LONGEST + 1 and sender.due()
    assert now < healthchecks.check_due() <= now + healthchecks.LONGEST + 1
    assert healthchecks.due()


def test_a_resting_job_sleeps_until_woken_or_the_clock_finds_it_work(schedulers):
    """`serve`'s scheduler (rests=True): nothing due means no timer, and the clock's look
    (once a minute; here called by hand) wakes it when another process made work."""
    from lightci.schedule import Scheduler, minutely, paced

    ran, work, looked, minutes = [], [], [], []
    woken = threading.Event()

    def deliver() -> float | None:
        ran.append(time.time())
        return None  # nothing due

    def look() -> bool:
        looked.append(time.time())
        return bool(work)

    scheduler = Scheduler(
        [paced(5, deliver, woken, look), minutely(lambda: minutes.append(1))], rests=True
    ).start()
    schedulers.append(scheduler)
    name = f"{__name__}.{deliver.__qualname__}"
    wait_until(lambda: scheduler.waits()[name] is not None, "the first run")
    assert scheduler.waits()[name] == float("inf")  # no timer at all
    wait_until(lambda: minutes == [1], "the clock's first turn to run the minutely job")
    scheduler.tick()  # the clock's next turn: its look finds nothing
    assert looked and len(ran) == 1
    work.append(1)  # another process made work
    scheduler.tick()
    wait_until(lambda: len(ran) == 2, "the run the clock's look asked for")
    wait_until(lambda: scheduler.waits()[name] == float("inf"), "it to rest again")
    woken.set()  # this process made work (a drain, a deploy)
    wait_until(lambda: len(ran) == 3, "the run a wake-up asks for")


def test_a_quiet_home_turns_the_clock_every_few_minutes_and_at_once_when_stirred(schedulers):
    """`serve` at rest: while nothing is about, the clock turns every QUIET_REST s, not
    every minute; a drain's start in this process (stirred) turns it at once, and a turn
    that finds work or a home that is not quiet brings back the minute."""
    from lightci.schedule import QUIET_REST, REST, Scheduler, minutely, paced

    minutes, woken, work, quiet = [], [], [], [True]
    stirred = threading.Event()

    def next_minute(due: float) -> bool:
        return due % REST == 0 and due <= time.time() + REST

    scheduler = Scheduler(
        [minutely(lambda: minutes.append(1))],
        rests=True,
        quiet=lambda: quiet[0],
        stirred=stirred,
    )
    now = time.time()
    assert now + QUIET_REST - 1 <= scheduler.tick() <= time.time() + QUIET_REST
    resting = paced(5, lambda: None, None, lambda: bool(work))
    # A resting paced job as the running scheduler holds one (its thread is not needed here).
    scheduler._pacers["resting"] = SimpleNamespace(
        resting=True, job=resting, wake=lambda: woken.append(1)
    )
    work.append(1)  # a build somewhere: the look finds it, the minute is back
    assert next_minute(scheduler.tick()) and woken == [1]
    work.clear()
    quiet[0] = False  # e.g. a job with a schedule
    assert next_minute(scheduler.tick())
    del scheduler._pacers["resting"]

    quiet[0] = True
    scheduler.start()
    schedulers.append(scheduler)
    wait_until(lambda: len(minutes) == 4, "the clock's first turn")
    stirred.set()  # a drain starts in this process
    wait_until(lambda: len(minutes) == 5, "the turn a stir asks for")


def test_a_home_is_quiet_without_builds_deployments_deliveries_or_schedules(bound):
    from lightci import builds
    from lightci.scheduler import quiet_home

    bound.job("app", build="true")
    assert quiet_home()
    bound.job("nightly", 'schedule = ["0 3 * * *"]\n', build="true")
    assert not quiet_home()
    (bound.jobs / "nightly" / "job.toml").write_text("")
    assert quiet_home()
    builds.trigger("app")  # queued: a worker anywhere may start it
    assert not quiet_home()


def _handles(pid: int, signum: int) -> bool:
    """The process has a handler of its own for signum (the worker sets SIGHUP's last)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signum - 1)))


def _tgkill(pid: int, tid: int, signum: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):
        pytest.skip("no tgkill in this libc: cannot aim a signal at one thread")
    if libc.tgkill(pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_idle_worker_stops_within_seconds_of_a_signal_any_thread_received(home, signum):
    """The main thread sleeps in select() between health checks (30 s); a signal that lands
    on another thread must still wake it, or the worker would keep claiming meanwhile."""
    if not sys.platform.startswith("linux"):
        pytest.skip("aiming a signal at one thread needs Linux's tgkill")
    worker = home.start_worker(str(BIN / "lightci"), "worker", "--workers", "2")
    wait_until(lambda: _handles(worker.pid, signal.SIGHUP), "the worker's signal handlers")
    other = next(int(t) for t in os.listdir(f"/proc/{worker.pid}/task") if int(t) != worker.pid)
    _tgkill(worker.pid, other, signum)
    assert worker.wait(15) == 0


def test_a_server_whose_jobs_use_no_docker_never_loads_the_docker_sdk(home):
    home.job("hello", "", build="echo hi\n")
    code = (
        "import sys\n"
        "from lightci import models, container, scheduler, worker, deploy, images, probe\n"
        "from lightci.cli import servers\n"
        "from lightci.config import settings\n"
        "models.bind(settings())\n"
        "assert container.remove_leftovers() == []\n"
        "assert container.engine_failures() == () and container.docker_error('NotFound') == ()\n"
        "print([m for m in ('docker', 'requests') if m in sys.modules])\n"
        "import docker.errors\n"
        "print(container.docker_error('NotFound') == (docker.errors.NotFound,))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "LIGHTCI_HOME": str(home.path)},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


class Hold:
    """A request that holds its thread until released."""

    def __init__(self, release: threading.Event):
        self.release, self.serviced = release, threading.Event()

    def service(self):
        self.serviced.set()
        self.release.wait(30)

    def cancel(self):
        self.release.set()


def test_the_web_server_starts_request_threads_as_requests_need_them():
    from lightci.web.app import GrowingDispatcher

    dispatcher = GrowingDispatcher(3)
    assert not dispatcher.threads  # an idle server holds none
    release = threading.Event()
    try:
        held = [Hold(release) for _ in range(4)]
        for task in held[:3]:
            dispatcher.add_task(task)
            assert task.serviced.wait(30)
        assert len(dispatcher.threads) == 3
        dispatcher.add_task(held[3])  # the limit: it waits for a free thread
        assert len(dispatcher.threads) == 3 and not held[3].serviced.is_set()
        release.set()
        assert held[3].serviced.wait(30)
    finally:
        release.set()
        dispatcher.shutdown()


def test_serve_at_rest_holds_few_threads(home):
    """The web server's 32 request threads start only when needed."""
    serve = home.start_worker(str(BIN / "lightci"), "serve", "--port", str(free_port()))
    wait_until(lambda: list((home.path / "run" / "wake").glob("*.fifo")), "serve to listen")
    threads = len(os.listdir(f"/proc/{serve.pid}/task"))
    assert threads < 25, threads


def test_a_worker_and_serve_at_rest_load_no_sh_yaml_psutil_or_http_client(home):
    """sh (with asyncio, ssl), ruamel.yaml, psutil, http.client, APScheduler and OpenSSL's
    hashing are a third of a resting worker's memory: the first stage, checkout, release
    bump, health check, delivery or job schedule loads them (OpenSSL's hashing: never)."""
    code = (
        "import sys; from lightci.cli.drivers import skip_other_drivers; skip_other_drivers(None)\n"
        "heavy = ('sh', 'ruamel.yaml', 'http.client', '_ssl', 'asyncio', 'difflib', 'psutil',\n"
        "         'apscheduler', 'importlib.metadata', 'urllib.request', 'smtplib', '_hashlib')\n"
        "import lightci.cli.workers\n"
        "print(' '.join(m for m in heavy if sys.modules.get(m)) or '-')\n"
        "import lightci.cli.servers\n"
        "print(' '.join(m for m in heavy if sys.modules.get(m)) or '-')\n"
        "from lightci import stageproc\n"
        "print(stageproc.start(['true'], {}, '/', 1).wait(), 'sh' in sys.modules)\n"
        "from lightci import webhooks; print(webhooks._hmac_hex('secret', b'{}'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=home.env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    worker, serve, stage, signature = out.stdout.splitlines()
    assert worker == "-"
    # serve's web server (bottle) brings http.client; ssl waits for its first use
    assert serve == "http.client"
    assert stage == "0 False"  # stages start without sh: only git (checkout) loads it
    # Python's own SHA-256 signs as OpenSSL's does (this process has it)
    assert signature == hmac.new(b"secret", b"{}", hashlib.sha256).hexdigest()


def test_ssl_loads_at_its_first_use_and_then_works_from_any_thread(home, tmp_path):
    """Imported early by http.client (bottle), ssl loads when first used: a delivery to an
    HTTPS hook verifies the certificate as ever, with eight threads asking at once."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    got = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/hook"
    code = (
        "import sys, threading; from lightci.cli.drivers import skip_other_drivers;"
        "skip_other_drivers(None); import lightci.cli.servers, ssl\n"
        "print('_ssl' in sys.modules)\n"
        "names = []\n"
        "threads = [threading.Thread(target=lambda: names.append(ssl.SSLContext.__name__))"
        " for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(names.count('SSLContext'))\n"
        "from lightci import sender; from lightci.config import settings\n"
        f"print(sender._post(settings(), {url!r}, {{'text': 'hi'}}, {{}}))\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
            env={**home.env, "SSL_CERT_FILE": str(cert)},
        )  # fmt: skip
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "8", "HTTP", "200"]
    assert got == [b'{"text": "hi"}']


def test_a_stand_in_whose_module_cannot_load_fails_every_use_as_its_import_would(
    tmp_path, monkeypatch
):
    """A broken libssl, say: each use says why (ImportError), none finds a half module;
    importlib.util.find_spec answers before any use, as for a module not loaded yet."""
    from lightci.cli.drivers import OnFirstUse

    (tmp_path / "breaks.py").write_text("raise ImportError('libbreaks.so.3: cannot open')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    OnFirstUse.stand_in("breaks", native="breaks")
    try:
        stand_in = sys.modules["breaks"]
        assert importlib.util.find_spec("breaks").origin == str(tmp_path / "breaks.py")
        for _ in range(2):
            with pytest.raises(ImportError, match="libbreaks"):
                getattr(stand_in, "anything")  # noqa: B009 (the use that loads it)
            assert sys.modules["breaks"] is stand_in
    finally:
        sys.modules.pop("breaks", None)
    OnFirstUse.stand_in("not_there_at_all", native="breaks")
    assert "not_there_at_all" not in sys.modules  # nothing to load: no stand-in


def _loads_redis(home) -> bool:
    code = (
        "import sys; from lightci.cli.drivers import skip_other_drivers; skip_other_drivers(None);"
        "import lightci.worker; print(bool(sys.modules.get('redis')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=home.env
    )
    return out.stdout.split()[-1] == "True"


def test_a_worker_on_the_sqlite_queue_loads_no_redis_client_and_one_on_redis_does(home):
    """huey imports redis when it loads (~6 MB): only a home whose queue is Redis needs it."""
    pytest.importorskip("redis")  # else the check proves nothing
    assert not _loads_redis(home)
    config = home.path / "lightci.toml"
    config.write_text(config.read_text() + '[queue]\nurl = "redis://127.0.0.1:1/0"\n')
    assert _loads_redis(home)
