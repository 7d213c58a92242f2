"""The build engine's processes: timeouts, cancels, lost workers, secrets, isolation.

Real workers on one SQLite home, triggered through the real `lightci` command.
"""

from __future__ import annotations

import base64
import socket
import subprocess

import pytest

from tests.conftest import wait_for_file, wait_gone, wait_until

GRANDCHILD = """
( sleep 600 & echo $! > "$PIDFILE"; wait ) &
sleep 600
"""


def test_timeout_kills_the_whole_process_group(home):
    pidfile = home.path / "grandchild.pid"
    home.job("slow", f'timeout = 2\n[env]\nPIDFILE = "{pidfile}"\n', build=GRANDCHILD)
    home.start_worker()
    build_id = home.trigger("slow")
    grandchild = int(wait_for_file(pidfile))
    row = home.wait_for([build_id])[0]
    assert row["status"] == "timeout"
    assert row["error"] == "timeout after 2 s"
    assert wait_gone(grandchild)


def test_cancel_kills_grandchildren_and_frees_the_key(home):
    pidfile = home.path / "grandchild.pid"
    home.job("slow", f'[env]\nPIDFILE = "{pidfile}"\n', build=GRANDCHILD)
    home.start_worker()
    build_id = home.trigger("slow")
    next_id = home.trigger("slow")
    grandchild = int(wait_for_file(pidfile))
    out = home.cli("cancel", str(build_id)).stdout
    assert "worker will stop it" in out
    row = home.wait_for([build_id])[0]
    assert (row["status"], row["error"]) == ("cancelled", "cancelled by user")
    assert wait_gone(grandchild)
    # The key is free again: the next build of it starts.
    home.wait_for([next_id], states={"running"})
    home.cli("cancel", str(next_id))
    home.wait_for([next_id])


def test_cancelling_a_queued_build_ends_it_at_once(home):
    home.job("hello", build="true\n")
    build_id = home.trigger("hello")
    home.cli("cancel", str(build_id))
    assert home.build(build_id)["status"] == "cancelled"
    again = home.cli("cancel", str(build_id), check=False)
    assert again.returncode == 2 and "already ended" in again.stderr


def test_secrets_never_appear_in_a_log(home):
    home.path.joinpath("secrets.env").write_text("API_TOKEN=s3cr3t-t0ken-value\n")
    home.job(
        "leaky",
        'secrets = ["API_TOKEN"]\n',
        build="""
        echo "plain: $API_TOKEN"
        echo "in a sentence: token=${API_TOKEN}."
        echo -n "$API_TOKEN" | base64
        echo "$API_TOKEN" | base64
        printf 'x%s' "$API_TOKEN" | base64
        >&2 echo "stderr: $API_TOKEN"
        """,
    )
    home.start_worker()
    build_id = home.trigger("leaky")
    assert home.wait_for([build_id])[0]["status"] == "success"
    log = home.log(build_id)
    assert "s3cr3t-t0ken-value" not in log
    raw = b"s3cr3t-t0ken-value"
    for variant in (raw, raw + b"\n", b"x" + raw):
        encoded = base64.b64encode(variant).decode()
        assert encoded[4:-4] not in log, f"base64 of the secret leaked: {encoded}"
    assert log.count("***") >= 5


def test_multi_line_secrets_are_masked_line_by_line():
    from lightci.logs import Masker

    secret = "-----BEGIN KEY-----\nMIIEsecretline1\nMIIEsecretline2\n-----END KEY-----"
    mask = Masker([secret])
    assert "MIIEsecretline1" not in mask("cat key:\nMIIEsecretline1\n")
    assert "MIIEsecretline2" not in mask(" MIIEsecretline2 ")
    assert mask("nothing secret here") == "nothing secret here"


def test_a_multi_line_secret_can_be_kept_in_secrets_env_and_reaches_its_build_masked(home):
    """secrets.env was read line by line: a PEM key could not be stored at all."""
    from lightci.errors import UserError
    from lightci.secretfile import read_secrets

    pem = "-----BEGIN KEY-----\nMIIEsecretline1\nMIIEsecretline2\n-----END KEY-----"
    account = '{\n  "type": "service_account",\n  "universe_domain": "googleapis.com"\n}'
    home.path.joinpath("secrets.env").write_text(
        f'# keys\nSIGNING_KEY="{pem}"\nexport OTHER=\'plain\'\nEMPTY=""\n'
        f"ACCOUNT='{account}'\n"
        'NOTED="x" # a comment after a value: one line, as before\nLAST=plain\n'
    )
    assert read_secrets(home.path / "secrets.env") == {
        "SIGNING_KEY": pem,
        "OTHER": "plain",
        "EMPTY": "",
        "ACCOUNT": account,
        "NOTED": '"x" # a comment after a value: one line, as before',
        "LAST": "plain",
    }
    home.job(
        "sign",
        'secrets = ["SIGNING_KEY"]\n',
        build='printf "%s\\n" "$SIGNING_KEY" | wc -l\necho "$SIGNING_KEY"\n',
    )
    home.start_worker()
    build_id = home.trigger("sign")
    assert home.wait_for([build_id])[0]["status"] == "success"
    log = home.log(build_id)
    assert "\n4\n" in log and "MIIEsecretline" not in log and "BEGIN KEY" not in log
    broken = home.path / "broken.env"
    broken.write_text('KEY="never closed\nmore\n')
    with pytest.raises(UserError, match='the " that opens KEY is never closed'):
        read_secrets(broken)


def test_two_builds_never_share_home_or_pub_cache(home):
    home.configure(slots=4)
    home.job(
        "iso",
        'key = "{branch}"\ncache = "key"\n',
        build='echo "HOME=$HOME"; echo "PUB_CACHE=$PUB_CACHE"; echo "TMPDIR=$TMPDIR"\n'
        'touch "$HOME/mine-$LIGHTCI_BUILD_ID"; ls "$HOME"\n',
    )
    home.start_worker(workers=4)
    ids = [home.trigger("iso", "--branch", b) for b in ("main", "develop", "main")]
    home.wait_for(ids)

    def env_of(i):
        lines = [ln for ln in home.log(i).splitlines() if "=" in ln and ln[:1].isupper()]
        return dict(ln.split("=", 1) for ln in lines)

    envs = {i: env_of(i) for i in ids}
    homes = {e["HOME"] for e in envs.values()}
    assert len(homes) == 3
    assert envs[ids[0]]["PUB_CACHE"] != envs[ids[1]]["PUB_CACHE"]  # other key, other cache
    assert envs[ids[0]]["PUB_CACHE"] == envs[ids[2]]["PUB_CACHE"]  # same key shares (serially)
    for i in ids:
        assert home.log(i).count("mine-") == 1  # each HOME held only its own file


def test_a_hostile_branch_name_runs_nothing(home, tmp_path):
    home.job("hello", build='echo "branch is $LIGHTCI_BRANCH"\n')
    home.start_worker()
    # git allows $ ( ) ` ; | { } in a branch name: each reaches the script as text
    for branch in ("x$(touch${IFS}PWNED)", "x`touch${IFS}PWNED`", "x;touch${IFS}PWNED|y"):
        build_id = home.trigger("hello", "--branch", branch)
        assert home.wait_for([build_id])[0]["status"] == "success"
        assert f"branch is {branch}" in home.log(build_id)
    for branch in ("x$(touch PWNED)", "x;touch PWNED"):  # no space: not a branch at all
        refused = home.cli("trigger", "hello", "--branch", branch, check=False)
        assert refused.returncode == 2 and "not a valid git branch name" in refused.stderr
    found = subprocess.run(
        ["find", str(tmp_path), "/tmp", "-maxdepth", "4", "-name", "PWNED"],
        capture_output=True,
        text=True,
    ).stdout
    assert "PWNED" not in found


def test_a_sigkilled_worker_is_noticed_by_its_sibling_without_the_scheduler(home):
    pidfile = home.path / "grandchild.pid"
    home.job("slow", f'[env]\nPIDFILE = "{pidfile}"\n', build=GRANDCHILD)
    first = home.start_worker()
    doomed = home.trigger("slow", "--branch", "main")
    home.wait_for([doomed], states={"running"})
    grandchild = int(wait_for_file(pidfile))
    assert home.build(doomed)["pid"] == first.pid
    sibling = home.start_worker()
    # Its wake-up pipe is made after its start-up (and its sweeper's start): it is up.
    pipe = home.path / "run" / "wake" / f"{socket.gethostname()}-{sibling.pid}.fifo"
    wait_until(pipe.exists, "the sibling worker to start")
    first.kill()
    first.wait()
    row = home.wait_for([doomed], timeout=30)[0]
    assert row["status"] == "lost"
    assert f"worker {first.pid} on host" in row["error"]
    assert wait_gone(grandchild)
    # Its stage ends with it (a duration that stops growing), and its log says how it ended.
    with home.db() as conn:
        open_stages = conn.execute(
            "SELECT COUNT(*) FROM stage WHERE build_id = ? AND finished_at IS NULL", (doomed,)
        ).fetchone()[0]
    assert open_stages == 0
    assert home.log(doomed).splitlines()[-1] == f"[lightci] ended lost: {row['error']}"
    # The key and the slot are free: the survivor runs the next build of that key.
    pidfile.unlink()
    home.job("slow", f'[env]\nPIDFILE = "{pidfile}"\n', build="echo survived\n")
    after = home.trigger("slow", "--branch", "main")
    assert home.wait_for([after])[0]["status"] == "success"


def test_a_stage_that_reads_stdin_gets_nothing(home):
    """Stages have no input: stdin is /dev/null itself, not a pipe carrying some text."""
    home.job("reader", "", build='printf "stdin:[%s]\\n" "$(cat)"\n')
    home.start_worker()
    build = home.trigger("reader")
    assert home.wait_for([build])[0]["status"] == "success"
    assert "stdin:[]" in home.log(build)


def test_a_log_names_a_stage_s_script_without_the_server_s_path(home):
    """A public server shows logs to anyone: the stage line names the job's file only."""
    home.job("hello", build="echo hi\n")
    home.start_worker()
    build_id = home.trigger("hello")
    assert home.wait_for([build_id])[0]["status"] == "success"
    [line] = [x for x in home.log(build_id).splitlines() if "==> stage" in x]
    assert line.endswith("==> stage build (hello/build.sh)") and str(home.path) not in line
