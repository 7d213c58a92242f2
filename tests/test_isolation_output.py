"""Hostile builds: what a build can print, a full disk.

Each scenario is an attack from issue 9 run against real workers; each fails on
the code before the sandbox (stages straight on the host, sh reading lines).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Home, Server
from tests.sandboxing import build_dir, live_processes_of, wait_until

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
