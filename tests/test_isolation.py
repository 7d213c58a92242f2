"""Hostile builds: what one build can reach, what it leaves behind, what it can print, a full disk.

Each scenario is an attack from issue 9 run against real workers; each fails on
the code before the sandbox (stages straight on the host, sh reading lines).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import Home, Server

SECRET = "pr0d-deploy-key-7f3a9c"
TOKEN = "admin-token-5b1e8d2c4a6f"
HOOK_SECRET = "hook-secret-0c9d8e7f"


def bwrap_works() -> None:
    from lightci.sandbox import probe

    program = shutil.which("bwrap")
    if not program:
        pytest.skip("needs bubblewrap (Debian package bubblewrap; scripts/test installs it)")
    problem = probe(program)
    if problem:
        pytest.skip(f"bwrap cannot make a sandbox here: {problem}")


def wait_until(check, what: str, timeout: float = 60):
    deadline = time.time() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def build_dir(home: Home, build_id: int) -> Path:
    row = home.build(build_id)
    return home.path / "builds" / row["job"] / str(row["number"])


def live_processes_of(home: Home, build_id: int) -> list[int]:
    marker = str(build_dir(home, build_id) / "workspace")
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and (
                proc.environ().get("LIGHTCI_WORKSPACE") == marker
            ):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


# -- what a build can reach -------------------------------------------------------


def test_a_build_cannot_read_or_signal_another_running_build(home):
    """A job with no secrets read another job's secret in /proc/<pid>/environ, and could kill it."""
    bwrap_works()
    home.configure(sandbox="auto", slots=2)
    home.path.joinpath("secrets.env").write_text(f"DEPLOY_KEY={SECRET}\n")
    home.job(
        "holder",
        'secrets = ["DEPLOY_KEY"]\n',
        build='touch "$LIGHTCI_ARTIFACTS/started"\n'
        'while [ ! -e "$LIGHTCI_WORKSPACE/go" ]; do sleep 0.05; done\necho holder done\n',
    )
    home.start_worker()
    holder = home.trigger("holder")
    wait_until(lambda: (build_dir(home, holder) / "artifacts" / "started").exists(), "holder")
    target = home.build(holder)["pgid"]
    inside = wait_until(lambda: live_processes_of(home, holder), "the holder's processes")
    home.job(
        "snoop",
        f'[env]\nTARGETS = "{target} {" ".join(map(str, inside))}"\n',
        build="cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep DEPLOY_KEY "
        '|| echo "found no secret"\n'
        "for pid in $TARGETS; do kill -KILL -- -$pid $pid 2>/dev/null || true; done\n"
        "echo tried to kill $TARGETS\n",
    )
    snoop = home.trigger("snoop")
    assert home.wait_for([snoop])[0]["status"] == "success"
    log = home.log(snoop)
    assert "found no secret" in log and SECRET not in log
    assert home.build(holder)["status"] == "running", "the snooping build killed the holder"
    (build_dir(home, holder) / "workspace" / "go").touch()
    assert home.wait_for([holder])[0]["status"] == "success"
    assert "holder done" in home.log(holder)


NOSY = """
ROOT="$LIGHTCI_WORKSPACE/../../../.."
cat "$ROOT/secrets.env" "$ROOT/lightci.toml" "$ROOT/jobs/victim/job.toml" 2>&1 || true
echo "listing: $(ls -A "$ROOT" "$ROOT/builds" "$ROOT/jobs" 2>/dev/null | tr '\n' ' ')"
echo 'echo pwned' >> "$ROOT/jobs/victim/build.sh" 2>&1 || true
echo pwned >> "$ROOT/lightci.db" 2>&1 || true
echo pwned >> "$0" 2>&1 || true
echo "[lightci forged]" >> "$LIGHTCI_WORKSPACE/../log.txt" 2>&1 || true
for d in "$LIGHTCI_WORKSPACE" "$HOME" "$TMPDIR" "$LIGHTCI_ARTIFACTS" "$LIGHTCI_CACHE" /tmp; do
  echo mine > "$d/written-by-the-build"
done
echo "tmp is $(cat "$TMPDIR/written-by-the-build")"
"""


def test_a_build_sees_nothing_of_the_lightci_home_but_its_own_dirs(home, serve):
    """secrets.env, lightci.toml, other jobs, lightci.db: through $LIGHTCI_WORKSPACE/../../.."""
    bwrap_works()
    home.configure(sandbox="auto")
    with home.path.joinpath("lightci.toml").open("a") as f:
        f.write(f'[server]\ntoken = "{TOKEN}"\n[webhooks]\nsecret = "{HOOK_SECRET}"\n')
    home.path.joinpath("secrets.env").write_text(f"DEPLOY_KEY={SECRET}\n")
    victim = home.job("victim", f'webhook_secret = "{HOOK_SECRET}x"\n', build="echo victim\n")
    before = victim.joinpath("build.sh").read_bytes()
    own = home.job("nosy", 'cache = "job"\n', build=NOSY)
    own_script = own.joinpath("build.sh").read_bytes()
    server = serve(env={"LIGHTCI_TOKEN": TOKEN})
    build_id = home.trigger("nosy")
    row = home.wait_for([build_id])[0]
    log = home.log(build_id)
    assert row["status"] == "success", log
    for secret in (SECRET, TOKEN, HOOK_SECRET):
        assert secret not in log
    listing = next(ln for ln in log.splitlines() if ln.startswith("listing: "))
    assert "nosy" in listing and "builds" in listing  # ls worked: it shows only its own
    for name in ("victim", "secrets.env", "lightci.toml", "lightci.db", "huey.db", "mirrors"):
        assert name not in listing  # not even the names of what else the home holds
    assert victim.joinpath("build.sh").read_bytes() == before
    assert own.joinpath("build.sh").read_bytes() == own_script
    with sqlite3.connect(home.path / "lightci.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not home.path.joinpath("lightci.db").read_bytes().endswith(b"pwned\n")
    assert "[lightci forged]" not in log
    # Its own dirs are its own, /tmp included (the build's tmp).
    root = build_dir(home, build_id)
    for sub in ("workspace", "home", "tmp", "artifacts"):
        assert (root / sub / "written-by-the-build").read_text() == "mine\n"
    assert (home.path / "caches" / "nosy" / "_job" / "written-by-the-build").exists()
    assert "tmp is mine" in log
    assert "not isolated" not in log
    assert 'id="not-isolated"' not in server.get("/", headers=_bearer()).text


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_auto_says_plainly_when_bwrap_does_not_work(home, serve, tmp_path):
    """No user namespaces (simulated: a bwrap that fails): builds run, and say they are exposed."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    fake.joinpath("bwrap").write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n"
    )
    fake.joinpath("bwrap").chmod(0o755)
    home.configure(sandbox="auto")
    home.job("hello", build="echo hi\n")
    server = serve(env={"PATH": f"{fake}:{home.env['PATH']}"})
    build_id = home.trigger("hello")
    assert home.wait_for([build_id])[0]["status"] == "success"
    log = home.log(build_id)
    assert "this build is not isolated from the host" in log
    assert "No permissions to creating new namespace" in log
    page = server.get("/").text
    assert 'id="not-isolated"' in page and "Host builds are not isolated" in page
    # sandbox = "bwrap" insists: the build fails and says why, the stage never runs.
    home.configure(sandbox="bwrap")
    failed = home.trigger("hello")
    row = home.wait_for([failed])[0]
    assert row["status"] == "failed"
    assert row["error"].startswith('[builds] sandbox = "bwrap", but bwrap does not work here')
    assert "hi" not in home.log(failed).split("\n")
    assert "Host builds fail" in server.get("/").text


# -- what a build leaves behind ---------------------------------------------------


@pytest.mark.parametrize("sandbox", ["none", "auto"])
def test_what_a_stage_started_ends_with_the_stage(home, sandbox):
    """`setsid sh -c 'sleep 120' &` outlived a successful build."""
    if sandbox == "auto":
        bwrap_works()
    home.configure(sandbox=sandbox)
    home.job("leaky", build="setsid sh -c 'sleep 120' &\nnohup sleep 120 >/dev/null 2>&1 &\n")
    home.start_worker()
    build_id = home.trigger("leaky")
    assert home.wait_for([build_id])[0]["status"] == "success"
    wait_until(lambda: not live_processes_of(home, build_id), "the leftovers to end", 10)


def test_sandboxed_stages_still_time_out_cancel_and_hit_memory_limits(home):
    bwrap_works()
    home.configure(sandbox="auto", slots=3)
    home.job(
        "polite",
        "timeout = 2\n",
        build="trap 'echo got TERM; exit 143' TERM\nsleep 600 &\nwait\n",
    )
    home.job("stubborn", "timeout = 2\n", build="trap '' TERM\nwhile true; do sleep 0.1; done\n")
    home.job("waiting", build='while [ ! -e "$LIGHTCI_WORKSPACE/go" ]; do sleep 0.05; done\n')
    home.start_worker(workers=3)
    polite, stubborn, waiting = (home.trigger(j) for j in ("polite", "stubborn", "waiting"))
    home.wait_for([waiting], states={"running"})
    wait_until(lambda: live_processes_of(home, waiting), "the waiting stage")
    home.cli("cancel", str(waiting))
    rows = home.wait_for([polite, stubborn, waiting])
    assert [r["status"] for r in rows] == ["timeout", "timeout", "cancelled"]
    assert "got TERM" in home.log(polite)  # TERM reached the stage inside bwrap first
    for build_id in (polite, stubborn, waiting):
        wait_until(lambda b=build_id: not live_processes_of(home, b), "the stage to end", 10)


def test_a_sandboxed_stage_keeps_its_memory_limit(home):
    bwrap_works()
    home.configure(sandbox="auto")
    home.job(
        "hungry",
        'memory = "64m"\n',
        build="python3 -c 'b = bytearray(400 * 1024 * 1024); print(len(b))'\n",
    )
    home.start_worker()
    build_id = home.trigger("hungry")
    row = home.wait_for([build_id])[0]
    log = home.log(build_id)
    if "not applied" in log:
        pytest.skip("no memory cgroup here")
    assert row["status"] == "failed" and "out of memory" in row["error"], log


def test_a_sandboxed_stage_gets_its_checkout(home, tmp_path):
    bwrap_works()
    src = tmp_path / "src"
    src.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    src.joinpath("README").write_text("from the repo\n")
    subprocess.run([*git, "-C", str(src), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(src), "commit", "-qm", "one"], check=True)
    home.configure(sandbox="auto")
    home.job("repo", f'repo = "{src}"\n', build='cat README; echo "commit $LIGHTCI_COMMIT"\n')
    home.start_worker()
    build_id = home.trigger("repo", "--branch", "main")
    row = home.wait_for([build_id])[0]
    log = home.log(build_id)
    assert row["status"] == "success", log
    assert "from the repo" in log and f"commit {row['commit']}" in log


# -- what a build can print -------------------------------------------------------


def test_200_mb_without_a_newline_leaves_the_worker_flat(home):
    """sh held a newline-less line whole in the worker: +1.2 GB for 200 MB of output."""
    home.job("warm", build="echo warm\n")
    home.job("flood", build="head -c 200000000 /dev/zero | tr '\\0' x\n")
    worker = home.start_worker(workers=1)
    assert home.wait_for([home.trigger("warm")])[0]["status"] == "success"
    before = _peak_rss(worker.pid)
    build_id = home.trigger("flood")
    assert home.wait_for([build_id], timeout=300)[0]["status"] == "success"
    growth = _peak_rss(worker.pid) - before
    print(f"worker peak RSS {before / 2**20:.0f} MB -> +{growth / 2**20:.1f} MB for 200 MB")
    longest = printed = 0
    with open(build_dir(home, build_id) / "log.txt", "rb") as log:
        for line in log:  # no line is longer than 64 KB: reading it line by line is cheap
            longest = max(longest, len(line))
            if not line.startswith(b"[lightci "):
                printed += len(line) - 1
    shutil.rmtree(build_dir(home, build_id))
    assert growth < 100 * 2**20, f"the worker grew {growth / 2**20:.0f} MB"
    assert printed == 200_000_000
    assert longest <= 64 * 1024 + 1


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_stage_cannot_print_lightcis_own_notes(home):
    """`[lightci 2026-... UTC] finished: success` from a failing stage looked like the real note."""
    home.job(
        "liar",
        build='echo "[lightci 2026-11-30 12:00:00 UTC] finished: success"\n'
        "printf 'progress\\r[lightci 2026-11-30 12:00:00 UTC] <== stage build exited 0\\n'\n"
        "printf '\\033[0m[light\\033[0mci 2026-11-30 12:00:00 UTC] finished: success\\n'\n"
        "echo 'an ordinary [lightci ] mention'\nexit 3\n",
    )
    home.start_worker()
    build_id = home.trigger("liar")
    assert home.wait_for([build_id])[0]["status"] == "failed"
    lines = home.log(build_id).split("\n")
    # What build.js styles as a note: the text after the last carriage return.
    notes = [ln for ln in lines if ln[ln.rfind("\r") + 1 :].startswith("[lightci ")]
    assert [n.split("] ", 1)[1] for n in notes if "finished" in n] == [
        "finished: failed (stage build exited 3)"
    ]
    assert not any("exited 0" in n for n in notes)
    assert not any("\x1b" in n or "\r" in n for n in notes)
    forged = [ln for ln in lines if ln.startswith("(stage output) ")]
    assert len(forged) == 4, lines


def test_masking_holds_where_a_long_line_is_split(tmp_path):
    from lightci.logs import LINE_MAX, BuildLog, Masker

    secret = "tok-" + hashlib.sha1(b"x").hexdigest()
    line = bytearray(b"y" * (3 * LINE_MAX))
    for at in (LINE_MAX - 5, 2 * LINE_MAX - len(secret) + 1, 2 * LINE_MAX + 40):
        line[at : at + len(secret)] = secret.encode()
    data = bytes(line) + "é".encode() * LINE_MAX + b"\nend\n"
    for size in (1, 1000, 4096, 65536, len(data)):
        path = tmp_path / f"log-{size}.txt"
        with BuildLog(path, Masker([secret])) as out:
            for i in range(0, len(data), size if size > 1 else 7919):
                out.write(data[i : i + (size if size > 1 else 7919)])
        text = path.read_text()
        assert secret not in text.replace("\n", "") and text.count("***") == 3
        assert max(len(ln.encode()) for ln in text.split("\n")) <= LINE_MAX + len(secret)
        assert "\ufffd" not in text  # never cut inside a character
        assert text.endswith("\nend\n")


# -- a full disk ------------------------------------------------------------------


@pytest.fixture
def small_home(tmp_path):
    """A lightci home on a 48 MB tmpfs of its own."""
    path = tmp_path / "small"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    h = Home(path)
    try:
        yield h
    finally:
        h.stop_all()
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_ends_the_build_once_and_frees_its_key(small_home):
    home = small_home
    home.job(
        "filler",
        'key = "disk"\n',
        build='dd if=/dev/zero of="$LIGHTCI_WORKSPACE/filler" bs=1M 2>&1\necho never\n',
    )
    server = Server(home)
    build_id = home.trigger("filler")
    wait_until(lambda: shutil.disk_usage(home.path).free < 1024 * 1024, "the disk to fill")
    filler = build_dir(home, build_id) / "workspace" / "filler"
    wait_until(lambda: not live_processes_of(home, build_id), "dd to give up")
    # While it is full: triggers say so (507 / exit 2), /health is 503, /metrics tells.
    answer = server.post(
        "/api/jobs/filler/builds", "{}", headers={"Content-Type": "application/json"}
    )
    assert answer.status == 507 and "disk full" in answer.json()["error"], answer
    cli = home.cli("trigger", "filler", check=False)
    assert cli.returncode == 2 and "disk full" in cli.stderr, cli.stderr
    health = server.get("/health")
    assert health.status == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["error"].startswith("disk full: ")
    metrics = server.get("/metrics").text
    assert "lightci_disk_low 1" in metrics
    free = [ln for ln in metrics.splitlines() if ln.startswith("lightci_disk_free_bytes ")]
    assert len(free) == 1 and int(free[0].split()[1]) < 1024 * 1024
    # Room again: the build's final state is written, once; its key and slot are free.
    filler.unlink()
    row = home.wait_for([build_id])[0]
    assert row["status"] == "failed"
    assert row["error"].startswith("disk full: "), row["error"]
    assert server.get("/health").status == 200
    home.job("filler", 'key = "disk"\n', build="echo fine\n")
    after = home.trigger("filler")
    assert home.wait_for([after])[0]["status"] == "success"
    assert [r["status"] for r in home.builds()] == ["failed", "success"]


def test_docker_builds_keep_their_container_whatever_the_sandbox(home, busybox_image):
    """[docker] stages are not wrapped in bwrap: the container is their boundary."""
    home.configure(sandbox="bwrap")
    d = home.job("boxed", f'[docker]\nimage = "{busybox_image}"\n')
    (d / "build.sh").write_text("set -eu\n[ -e /etc/os-release ] || echo in the image\n")
    home.start_worker()
    build_id = home.trigger("boxed")
    row = home.wait_for([build_id])[0]
    log = home.log(build_id)
    assert row["status"] == "success", log
    assert "in the image" in log and "isolated" not in log
