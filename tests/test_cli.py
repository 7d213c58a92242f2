"""The `lightci` program itself: one command's parser, the drivers it loads, how it ends."""

from __future__ import annotations

import subprocess

import pytest

from lightci.cli import COMMANDS, command_in, parser
from tests.conftest import BIN, wait_until


def subcommand_help(p, name: str) -> str:
    sub = next(a for a in p._actions if a.dest == "command")
    return sub.choices[name].format_help()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_parsed_alone_has_the_same_arguments_and_help(name):
    assert subcommand_help(parser(name), name) == subcommand_help(parser(), name)


@pytest.mark.parametrize(
    "argv, chosen",
    [
        (["trigger", "app", "--wait"], "trigger"),
        (["--home", "/x", "status"], "status"),
        (["--home=/x", "jobs"], "jobs"),
        (["--home", "trigger", "jobs"], "jobs"),  # a home named like a command
        (["-h", "trigger"], None),  # the top-level help lists every command
        (["--hom", "/x", "trigger"], None),  # abbreviations: the whole parser reads them
        (["bogus"], None),  # the whole parser's error lists the commands
        ([], None),
    ],
)
def test_only_a_command_word_after_at_most_home_picks_one_parser(argv, chosen):
    assert command_in(argv) == chosen


def test_the_top_level_help_still_lists_every_command(home):
    out = home.cli("--help").stdout
    assert all(f"    {name}" in out for name in COMMANDS)


def test_a_command_ends_with_its_output_whole_and_the_database_closed(home):
    """run() leaves by os._exit: the output is flushed first and main() closed the
    database, so the last connection's checkpoint removed the WAL file."""
    home.job("app", build="true")
    ids = [home.trigger("app", "--branch", str(i)) for i in range(3)]
    assert ids == [1, 2, 3]
    shown = home.cli("show", "3", "--json").stdout
    assert shown.rstrip().endswith("}") and '"id": 3' in shown
    assert not (home.path / "lightci.db-wal").exists()


def test_a_user_error_still_exits_2_in_one_line(home):
    result = subprocess.run(
        [str(BIN / "lightci"), "trigger", "nope"], env=home.env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("lightci: no job 'nope'") and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "where, words",
    [
        (["--port", "99999"], "port 99999 is not a TCP port"),
        (["--host", "999.1.1.1", "--port", "18999"], "cannot listen on 999.1.1.1:18999"),
    ],
)
def test_a_server_that_cannot_listen_says_so_in_one_line(home, where, words):
    result = home.cli("web", *where, check=False, timeout=30)
    assert result.returncode == 2, result
    assert words in result.stderr and "Traceback" not in result.stderr


def test_a_home_that_is_not_there_is_an_error_not_a_new_empty_one(home, tmp_path):
    missing = tmp_path / "typo"
    result = subprocess.run(
        [str(BIN / "lightci"), "--home", str(missing), "status"],
        env=home.env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == f"lightci: no lightci home at {missing}: make one with `lightci init {missing}`\n"
    )
    assert not missing.exists()
    served = subprocess.Popen(
        [str(BIN / "lightci"), "--home", str(missing), "worker"],
        env=home.env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: (missing / "lightci.db").exists(), "a worker to make its home")
    finally:
        served.kill()
        served.wait()


def test_init_makes_a_home_only_its_user_can_read(home, tmp_path):
    """lightci.toml holds the token and the webhook secret; it was 0644 in a 0755 home."""
    made = tmp_path / "ci"
    subprocess.run([str(BIN / "lightci"), "init", str(made)], env=home.env, check=True)
    assert made.stat().st_mode & 0o777 == 0o700
    assert made.joinpath("lightci.toml").stat().st_mode & 0o777 == 0o600
    assert "[server]" in made.joinpath("lightci.toml").read_text()


def test_home_may_follow_the_command_and_counts_must_be_positive(home, tmp_path):
    """`lightci jobs --home X` was an argparse error; `serve --workers 0` was taken."""
    elsewhere = {k: v for k, v in home.env.items() if k != "LIGHTCI_HOME"}
    run = [str(BIN / "lightci")]
    done = subprocess.run(
        [*run, "jobs", "--home", str(home.path)], env=elsewhere, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for argv in (["serve", "--workers", "0"], ["worker", "--workers", "-1"]):
        done = subprocess.run([*run, *argv], env=home.env, capture_output=True, text=True)
        assert done.returncode == 2 and "invalid positive value" in done.stderr, argv
