"""Hostile builds: what one build can reach and what it leaves behind.

Each scenario is an attack from issue 9 run against real workers; each fails on
the code before the sandbox (stages straight on the host, sh reading lines).
What a build can print and a full disk are in test_isolation_output.py.
"""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from tests.sandboxing import (
    HOOK_SECRET,
    SECRET,
    TOKEN,
    build_dir,
    bwrap_works,
    live_processes_of,
    wait_until,
)

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
cat "$(dirname "$0")/job.toml" 2>&1 || true
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
    # Its own job.toml too: with its webhook_secret a fork's PR build signs a push of itself.
    own = home.job("nosy", f'cache = "job"\nwebhook_secret = "{HOOK_SECRET}-own"\n', build=NOSY)
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
