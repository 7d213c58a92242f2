"""Deploy benchmark: switch time, requests lost while switching, proxy overhead. Prints JSON.

Runs `lightci serve` on a fresh home in a temp dir against the local Docker
engine. The app is busybox httpd in a FROM-scratch image (Debian's
busybox-static), so no registry is needed.

    idle_deploy_s   from the last stage's end to the route switched, nothing else running
    deploy_s        the same under the request loop (median of --deploys)
      image_s       ... of which: image build and container start
      health_s      ... of which: health checks until the switch
    lost            requests that failed during all switches (must be 0)
    proxy           requests/s and p99 through /apps/<job>/ and to the container directly
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
JOB = "bench-app"
STAGE = """#!/bin/sh
set -eu
cp /bin/busybox busybox
mkdir -p www
echo "$VERSION" > www/index.html
echo ok > www/health
cat > Dockerfile <<'EOF'
FROM scratch
COPY busybox /bin/busybox
COPY www /www
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
EOF
"""
TOML = """
[params]
version = "v0"
[deploy]
port = 8080
health = "/health"
health_retries = 20
health_interval = 0.25
drain = 2
monitor_interval = 0
"""
DRAIN = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(host: str, port: int, path: str, conn=None) -> int:
    own = conn is None
    conn = conn or http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        if own:
            conn.close()


class Home:
    def __init__(self, path: Path, port: int):
        self.path, self.port = path, port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTCI_")}
        self.env["LIGHTCI_HOME"] = str(path)
        job = path / "jobs" / JOB
        job.mkdir(parents=True)
        (job / "job.toml").write_text(TOML)
        (job / "build.sh").write_text(STAGE)
        (job / "build.sh").chmod(0o755)
        (path / "lightci.toml").write_text("[builds]\nslots = 2\n")

    def serve(self) -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(BIN / "lightci"), "serve", "--port", str(self.port), "--workers", "2"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.path / "serve.log", "ab"),
            start_new_session=True,
        )
        deadline = time.time() + 30
        while True:
            try:
                if get("127.0.0.1", self.port, "/health") == 200:
                    return proc
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("lightci serve did not answer")
            time.sleep(0.1)

    def trigger(self, version: str) -> int:
        out = subprocess.run(
            [str(BIN / "lightci"), "trigger", JOB, "-p", f"version={version}"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.split()[0])

    def query(self, sql: str, *args):
        with sqlite3.connect(self.path / "lightci.db", timeout=30) as conn:
            return conn.execute(sql, args).fetchall()

    def wait(self, build_id: int) -> str:
        while True:
            [(status,)] = self.query("SELECT status FROM build WHERE id = ?", build_id)
            if status in ("success", "failed", "cancelled", "timeout", "expired", "lost"):
                return status
            time.sleep(0.05)

    def timings(self, build_id: int) -> dict[str, float]:
        [(stages_done,)] = self.query(
            "SELECT MAX(finished_at) FROM stage WHERE build_id = ?", build_id
        )
        [(created, switched)] = self.query(
            "SELECT created_at, switched_at FROM deployment WHERE build_id = ?", build_id
        )
        return {
            "deploy_s": switched - stages_done,
            "image_s": created - stages_done,
            "health_s": switched - created,
        }


class Load:
    """Concurrent clients through the proxy, counting every failed request."""

    def __init__(self, port: int, clients: int):
        self.port, self.clients = port, clients
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status = get("127.0.0.1", self.port, f"/apps/{JOB}/")
                error = "" if status == 200 else f"HTTP {status}"
            except OSError as exc:
                error = repr(exc)
            with self.lock:
                if error:
                    self.failed += 1
                    self.errors.append(error)
                else:
                    self.ok += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def throughput(host: str, port: int, path: str, clients: int, seconds: float) -> dict:
    """Requests/s and latency percentiles of `clients` threads (keep-alive where allowed)."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.time() + seconds
    failures = [0]

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        mine = []
        while time.time() < stop:
            started = time.perf_counter()
            try:
                if get(host, port, path, conn) != 200:
                    failures[0] += 1
            except (OSError, http.client.HTTPException):
                failures[0] += 1
                conn.close()
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - began
    latencies.sort()
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        "failed": failures[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=3, help="switches to time")
    parser.add_argument("--clients", type=int, default=4, help="concurrent request loops")
    parser.add_argument("--seconds", type=float, default=5, help="per throughput measurement")
    args = parser.parse_args()
    try:
        import docker

        docker.from_env(timeout=10).ping()
    except Exception as exc:
        print(json.dumps({"deploy": {"skipped": f"no Docker engine answers: {exc}"}}))
        return 0
    if not Path("/bin/busybox").exists():
        print(json.dumps({"deploy": {"skipped": "needs /bin/busybox (busybox-static)"}}))
        return 0
    with tempfile.TemporaryDirectory(prefix="lightci-bench-deploy-") as tmp:
        home = Home(Path(tmp) / "home", free_port())
        server = home.serve()
        try:
            result = run(home, args)
        finally:
            server.kill()
            server.wait(10)
            subprocess.run(
                [str(BIN / "lightci"), "undeploy", JOB], env=home.env, capture_output=True
            )
            client = docker.from_env()
            for image in client.images.list(name=f"lightci/{JOB}"):
                client.images.remove(image.id, force=True)
    print(json.dumps({"deploy": result}, indent=2))
    return 0


def run(home: Home, args) -> dict:
    first = home.trigger("v0")
    if home.wait(first) != "success":
        raise SystemExit(f"the first deploy failed: see {home.path}/builds/{JOB}/1/log.txt")
    idle = home.trigger("idle")  # one switch without load, for comparison
    if home.wait(idle) != "success":
        raise SystemExit("the idle deploy failed")
    idle_timings = home.timings(idle)
    time.sleep(DRAIN + 0.5)
    timings = []
    with Load(home.port, args.clients) as load:
        for n in range(1, args.deploys + 1):
            build_id = home.trigger(f"v{n}")
            if home.wait(build_id) != "success":
                raise SystemExit(f"deploy v{n} failed")
            timings.append(home.timings(build_id))
            time.sleep(DRAIN + 0.5)  # the replaced container is gone before the next deploy
    [(address,)] = home.query("SELECT address FROM deployment WHERE state = 'live'")
    host, _, port = address.rpartition(":")
    via_proxy = throughput("127.0.0.1", home.port, f"/apps/{JOB}/", args.clients, args.seconds)
    direct = throughput(host, int(port), "/", args.clients, args.seconds)

    def median(key: str) -> float:
        return round(statistics.median(t[key] for t in timings), 3)

    return {
        "idle_deploy_s": round(idle_timings["deploy_s"], 3),
        "deploys": len(timings),
        "deploy_s": median("deploy_s"),
        "image_s": median("image_s"),
        "health_s": median("health_s"),
        "requests_during_switches": load.ok + load.failed,
        "lost": load.failed,
        "lost_errors": sorted(set(load.errors))[:5],
        "proxy": via_proxy,
        "direct": direct,
        "proxy_overhead_p99_ms": round(via_proxy["p99_ms"] - direct["p99_ms"], 2),
        "clients": args.clients,
    }


if __name__ == "__main__":
    sys.exit(main())
