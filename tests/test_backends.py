"""The same engine on PostgreSQL and Huey on Redis: what comes after one VPS.

A private PostgreSQL cluster and a Redis server run on loopback for the test;
two real worker processes share them, and the key, slot and FIFO rules hold
as they do on SQLite. Skips when the servers are not installed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import FINAL, free_port
from tests.traces import intervals, max_concurrency, overlaps, traced_job, wait_started

psycopg2 = pytest.importorskip("psycopg2")
pytest.importorskip("redis")
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
REDIS = shutil.which("redis-server")
if not PG_BIN or not REDIS:
    pytest.skip("postgresql or redis-server is not installed", allow_module_level=True)


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.getuid() == 0 else argv


@pytest.fixture
def postgres():
    root = Path(tempfile.mkdtemp(prefix="lightci-pg-"))
    if os.getuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", free_port()
    bindir = Path(PG_BIN[-1])
    subprocess.run(
        as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "lightci"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log.txt"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    yield f"postgresql://lightci@127.0.0.1:{port}/postgres"
    subprocess.run(
        as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
        capture_output=True,
    )
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_url():
    port = free_port()
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


def test_keys_slots_and_fifo_hold_on_postgresql_and_redis(home, postgres, redis_url):
    home.configure(slots=2)
    config = home.path / "lightci.toml"
    config.write_text(
        config.read_text() + f'[database]\nurl = "{postgres}"\n[queue]\nurl = "{redis_url}"\n'
    )
    gate = home.path / "gate"
    trace = traced_job(home, key="{branch}", gate=gate)
    home.start_worker()
    home.start_worker()
    ids = [home.trigger("app", "--branch", b) for b in ["main", "dev", "main", "x", "main"]]
    wait_started(trace, ids[:2])  # the other three queue up: main is taken, the slots are full
    gate.touch()

    conn = psycopg2.connect(postgres)
    conn.autocommit = True
    deadline = time.time() + 60
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT id, status FROM build ORDER BY id")
            rows = dict(cur.fetchall())
        if all(rows.get(i) in FINAL for i in ids):
            break
        assert time.time() < deadline, rows
        time.sleep(0.1)
    with conn.cursor() as cur:
        cur.execute("SELECT id, status, error FROM build ORDER BY id")
        ended = {i: (status, error) for i, status, error in cur.fetchall()}
    assert [ended[i][0] for i in ids] == ["success"] * 5, ended
    with conn.cursor() as cur:  # timestamps keep sub-second precision (not float4)
        cur.execute("SELECT queued_at FROM build ORDER BY id")
        queued = [row[0] for row in cur.fetchall()]
    assert queued == sorted(set(queued)) and queued[-1] - queued[0] < 60
    assert not (home.path / "lightci.db").exists()  # nothing went to SQLite
    runs = intervals(trace)
    assert max_concurrency(runs) <= 2
    mains = [i for i in ids if runs[i]["key"] == "app:main"]
    assert sorted(mains, key=lambda i: runs[i]["start"]) == mains
    for a in mains:
        for b in mains:
            assert a == b or not overlaps(runs[a], runs[b])
    with conn.cursor() as cur:  # the partial unique index exists there too
        cur.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'build_one_active_per_key'")
        assert "WHERE" in cur.fetchone()[0]
    conn.close()
