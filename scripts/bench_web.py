"""Web benchmark: signed GitHub pushes per second into `lightci serve`, and page render times.

Starts `lightci serve` on a free loopback port against a fresh home in a temp
dir, then from this (second) process:

  (a) webhooks: N signed GitHub push deliveries (each a realistic ~6 KB
      payload with its own delivery id) from C keep-alive client threads,
      bounded in count and in time; throughput, p50/p99 latency, and a check
      that every 202 is a committed row with the answered id (nothing lost).
      Slots are 0 (paused) so the run measures taking webhooks in, not builds.
  (b) pages: 100,000 builds in the table, then the dashboard, a job page and a
      few API reads, each fetched R times over HTTP; p50/p99 render time.

Bar: >= 300 webhooks/s with p99 < 100 ms and nothing lost; pages < 100 ms at
100k builds. Prints JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
SECRET = "bench-secret"
JOBS = ["app", "api", "web", "mobile", "docs"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(home: Path) -> None:
    for name in JOBS:
        job = home / "jobs" / name
        job.mkdir(parents=True, exist_ok=True)
        (job / "job.toml").write_text(
            f'description = "bench job {name}"\nwebhook_secret = "{SECRET}"\n'
            'branches = ["main", "release/*"]\nkey = "{flavor}_{branch}"\n'
            '[params]\nflavor = "dev"\n'
        )
        (job / "build.sh").write_text("#!/bin/sh\necho ok\n")
        (job / "build.sh").chmod(0o755)
    (home / "lightci.toml").write_text(
        "[server]\nmax_queued = 0\nthreads = 16\n[builds]\nslots = 0\nqueue_timeout = 86400\n"
    )


def start_server(home: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTCI_")}
    env["LIGHTCI_HOME"] = str(home)
    proc = subprocess.Popen(
        [str(BIN / "lightci"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "serve.log", "ab"),
        start_new_session=True,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("lightci serve did not come up:\n" + (home / "serve.log").read_text())


def push_payload(i: int) -> bytes:
    sha = hashlib.sha1(str(i).encode()).hexdigest()
    commits = [
        {
            "id": hashlib.sha1(f"{i}-{c}".encode()).hexdigest(),
            "tree_id": sha,
            "distinct": True,
            "message": f"Commit {c} of push {i}: a message of a usual length",
            "timestamp": "2026-11-23T12:00:00+00:00",
            "url": f"https://github.com/org/app/commit/{sha}",
            "author": {"name": "Dev", "email": "dev@example.com", "username": "dev"},
            "committer": {"name": "Dev", "email": "dev@example.com", "username": "dev"},
            "added": [f"lib/src/new_{c}.dart"],
            "removed": [],
            "modified": ["pubspec.yaml", f"lib/src/feature_{c}.dart", "README.md"],
        }
        for c in range(6)
    ]
    payload = {
        "ref": "refs/heads/main",
        "before": "0" * 39 + "1",
        "after": sha,
        "created": False,
        "deleted": False,
        "forced": False,
        "compare": "https://github.com/org/app/compare/a...b",
        "commits": commits,
        "head_commit": commits[-1],
        "repository": {"id": 1, "name": "app", "full_name": "org/app", "private": True},
        "pusher": {"name": "dev", "email": "dev@example.com"},
        "sender": {"login": "dev", "id": 1},
    }
    return json.dumps(payload).encode()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else 0.0


def webhooks(port: int, count: int, clients: int, max_seconds: float) -> tuple[dict, dict]:
    bodies = []
    for i in range(count):
        body = push_payload(i)
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
            "User-Agent": "GitHub-Hookshot/bench",
        }
        bodies.append((JOBS[i % len(JOBS)], body, headers))
    lock = threading.Lock()
    todo = iter(range(count))
    latencies: list[float] = []
    answers: dict[int, int] = {}
    accepted: dict[str, int] = {}  # delivery id -> build id
    stop_at = time.time() + max_seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.time() < stop_at:
            with lock:
                i = next(todo, None)
            if i is None:
                break
            job, body, headers = bodies[i]
            t0 = time.perf_counter()
            try:
                conn.request("POST", f"/hooks/{job}", body=body, headers=headers)
                res = conn.getresponse()
                data = res.read()
                status = res.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status, data = 0, b""
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(elapsed)
                answers[status] = answers.get(status, 0) + 1
                if status == 202:
                    accepted[headers["X-GitHub-Delivery"]] = json.loads(data)["builds"][0]
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    sent = len(latencies)
    return {
        "sent": sent,
        "clients": clients,
        "seconds": round(seconds, 2),
        "per_s": round(sent / seconds, 1),
        "p50_ms": round(pct(latencies, 0.5), 2),
        "p99_ms": round(pct(latencies, 0.99), 2),
        "max_ms": round(max(latencies, default=0), 2),
        "answers": {str(k): v for k, v in sorted(answers.items())},
        "payload_bytes": len(bodies[0][1]),
    }, accepted


def check_rows(home: Path, accepted: dict[str, int]) -> dict:
    conn = sqlite3.connect(home / "lightci.db")
    rows = dict(
        conn.execute("SELECT delivery, id FROM build WHERE delivery LIKE 'github:%'").fetchall()
    )
    conn.close()
    by_delivery = {d.split(":", 2)[2]: i for d, i in rows.items()}
    lost = [d for d, i in accepted.items() if by_delivery.get(d) != i]
    return {"accepted": len(accepted), "rows": len(rows), "lost": len(lost)}


def fill(home: Path, total: int) -> None:
    """A long-lived server's table: total builds over the jobs, the newest few queued or running.

    The webhook part's builds (queued, with slots = 0) end as expired first,
    as they would after their queue_timeout.
    """
    conn = sqlite3.connect(home / "lightci.db")
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute(
        "UPDATE build SET status = 'expired', finished_at = queued_at + 600, "
        "error = 'waited longer than 600 s' WHERE status = 'queued'"
    )
    start = conn.execute("SELECT COALESCE(MAX(number), 0) FROM build").fetchone()[0]
    now = time.time()
    rng = random.Random(7)
    finals = ["success"] * 8 + ["failed", "cancelled"]
    rows = []
    for n in range(total):
        job = JOBS[n % len(JOBS)]
        number = start + n // len(JOBS) + 1
        queued_at = now - (total - n) * 30
        status = rng.choice(finals)
        started = queued_at + rng.uniform(0.1, 20)
        finished = started + rng.uniform(20, 600)
        branch = rng.choice(["main", "develop", "release/1.2", "feature/login"])
        rows.append(
            (
                job,
                number,
                f"{job}:dev_{branch}",
                status,
                branch,
                hashlib.sha1(str(n).encode()).hexdigest(),
                '{"flavor": "dev"}',
                "webhook:github",
                queued_at,
                started,
                finished,
                0 if status == "success" else 1,
                "build",
                "" if status == "success" else "stage build exited 1",
                3600,
                600,
            )
        )
    conn.executemany(
        'INSERT INTO build (job, number, key, status, branch, "commit", params, trigger, '
        "queued_at, started_at, finished_at, exit_code, stage, error, timeout, queue_timeout, "
        "host, cancel_requested) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'','')",
        rows,
    )
    conn.execute(
        "UPDATE build SET status = 'queued', started_at = NULL, finished_at = NULL "
        "WHERE id > (SELECT MAX(id) - 20 FROM build)"
    )
    conn.execute(
        "UPDATE build SET status = 'running', finished_at = NULL, host = 'bench', pid = 1 "
        "WHERE id IN (SELECT id FROM build WHERE status = 'queued' ORDER BY id LIMIT 2)"
    )
    conn.commit()
    conn.close()


def pages(port: int, repeat: int, job_build: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    result = {}
    for name, path in [
        ("dashboard", "/"),
        ("job_page", f"/jobs/{JOBS[0]}"),
        ("job_page_older", f"/jobs/{JOBS[0]}?before={job_build}"),
        ("build_page", f"/builds/{job_build}"),
        ("api_builds", f"/api/builds?job={JOBS[1]}&limit=50"),
        ("api_status", "/api/status"),
        ("metrics", "/metrics"),
    ]:
        times, size = [], 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            conn.request("GET", path)
            res = conn.getresponse()
            body = res.read()
            times.append((time.perf_counter() - t0) * 1000)
            if res.status != 200:
                raise SystemExit(f"GET {path} -> {res.status}: {body[:300]!r}")
            size = len(body)
        result[name] = {
            "p50_ms": round(pct(times, 0.5), 2),
            "p99_ms": round(pct(times, 0.99), 2),
            "bytes": size,
        }
    conn.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hooks", type=int, default=3000, help="webhook deliveries to send")
    p.add_argument("--clients", type=int, default=8, help="concurrent client connections")
    p.add_argument("--max-seconds", type=float, default=60, help="stop sending after this")
    p.add_argument("--builds", type=int, default=100_000, help="builds in the table for pages")
    p.add_argument("--repeat", type=int, default=30, help="fetches of each page")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lightci-bench-web-") as tmp:
        home = Path(tmp)
        setup(home)
        port = free_port()
        server = start_server(home, port)
        try:
            hooks, accepted = webhooks(port, args.hooks, args.clients, args.max_seconds)
            hooks["rows"] = check_rows(home, accepted)
            hooks["bar"] = {
                "per_s_min": 300,
                "p99_ms_max": 100,
                "ok": hooks["per_s"] >= 300
                and hooks["p99_ms"] < 100
                and hooks["rows"]["lost"] == 0,
            }
            fill(home, args.builds)
            conn = sqlite3.connect(home / "lightci.db")
            total = conn.execute("SELECT COUNT(*) FROM build").fetchone()[0]
            middle = conn.execute(
                "SELECT id FROM build WHERE job = ? ORDER BY id LIMIT 1 OFFSET ?",
                (JOBS[0], args.builds // len(JOBS) // 2),
            ).fetchone()[0]
            conn.close()
            page_times = pages(port, args.repeat, middle)
            worst = max(
                v["p99_ms"] for k, v in page_times.items() if k in ("dashboard", "job_page")
            )
            result = {
                # Other work on the machine moves these numbers: say how busy it was.
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count(),
                "webhooks": hooks,
                "pages": {
                    "builds_in_table": total,
                    **page_times,
                    "bar": {"p99_ms_max": 100, "ok": worst < 100},
                },
            }
        finally:
            os.killpg(server.pid, 9)
            server.wait()
    print(json.dumps({"web": result}, indent=2))


if __name__ == "__main__":
    main()
