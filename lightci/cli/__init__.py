"""The `lightci` command: parse, load the one module the command lives in, run it.

Each command is thin: parse, call the domain, print. The CLI works on the local
home directly; no server needs to run. `trigger` goes to a running lightci of
the home when one holds its control socket (remote, control): it is the
command a script runs most, and that way it imports no peewee. A UserError
becomes a message on stderr and exit code 2.

    home     init, and the home every command works on
    builds   jobs, trigger, status, show, log, cancel, retry
    servers  serve, web, scheduler       workers  worker
    upkeep   cleanup, force-unlock, monitor
    deploys  deployments, rollback, undeploy
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import threading

from lightci import __version__
from lightci.cli import remote
from lightci.homes import resolve_home


def arg(*flags: str, **options) -> tuple[tuple[str, ...], dict]:
    return flags, options


WAIT_HELP = "wait, show the live log, exit 0 success / 1 failed / 2 otherwise"


def positive(text: str) -> int:
    """A count of 1 or more (argparse says "invalid positive value" otherwise)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


WORKERS = arg("--workers", type=positive, help="worker threads (default: max(4, slots))")
HOME = arg("--home", help="the lightci home (default: $LIGHTCI_HOME or ./.lightci)")
JSON = arg("--json", action="store_true")

# name: (module:function, what it does, its arguments)
COMMANDS: dict[str, tuple[str, str, list]] = {
    "init": ("home:init", "create a home directory with the example jobs", [arg("dir", nargs="?")]),
    "serve": (
        "servers:serve",
        "web, worker and scheduler in one process",
        [arg("--host"), arg("--port", type=int), WORKERS],
    ),
    "web": (
        "servers:web",
        "the web server alone: pages, JSON API, webhooks",
        [arg("--host"), arg("--port", type=int)],
    ),
    "worker": ("workers:worker", "run builds (a Huey consumer with the right settings)", [WORKERS]),
    "jobs": ("builds:list_jobs", "list jobs and their last build", []),
    "trigger": (
        "builds:trigger",
        "queue a build; prints its id first",
        [
            arg("job"),
            arg("-p", "--param", action="append", metavar="K=V", help="override a param"),
            arg("--branch", default=""),
            arg("--commit", default=""),
            arg("-P", "--priority", type=int, help="higher is claimed first across keys"),
            arg("--wait", action="store_true", help=WAIT_HELP),
        ],
    ),
    "status": ("builds:status", "slots in use, running builds, the queue", [JSON]),
    "show": ("builds:show", "one build", [arg("build"), JSON]),
    "log": (
        "builds:log",
        "a build's log",
        [arg("build"), arg("-f", "--follow", action="store_true")],
    ),
    "cancel": ("builds:cancel", "cancel a queued or running build", [arg("build")]),
    "retry": (
        "builds:retry",
        "queue a build again with the same inputs",
        [arg("build"), arg("--wait", action="store_true")],
    ),
    "scheduler": (
        "servers:scheduler",
        "run upkeep: orphan sweep, queue expiry, retention",
        [],
    ),
    "cleanup": (
        "upkeep:cleanup",
        "remove old builds and unused caches (retention)",
        [
            arg("--days", type=float, help="older than N days (default: retention_days)"),
            arg("--dry-run", action="store_true", help="show what would go and its size"),
            JSON,
        ],
    ),
    "force-unlock": (
        "upkeep:force_unlock",
        "end stuck running builds as lost and kill their processes",
        [arg("build", nargs="?"), arg("--all", action="store_true", help="every running build")],
    ),
    "monitor": (
        "upkeep:monitor",
        "disk use of builds and caches, free space, warnings",
        [arg("build", nargs="?"), JSON],
    ),
    "deployments": (
        "deploys:deployments",
        "Docker deployments, newest first",
        [arg("job", nargs="?"), arg("--limit", type=positive, default=20), JSON],
    ),
    "rollback": (
        "deploys:rollback",
        "redeploy the previous image ([deploy]), or revert the last bump ([gitops])",
        [
            arg("job"),
            arg("--to", type=int, help="[gitops]: re-apply this bump's values (its id)"),
            arg("--no-wait", action="store_true", help="[gitops]: queue the rollback only"),
        ],
    ),
    "undeploy": ("deploys:undeploy", "stop a job's containers and free its route", [arg("job")]),
}


SERVERS = {"serve", "web", "worker", "scheduler"}


def parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with `chosen`, only that command's (a run parses one command, and
    each command's parser costs argparse ~0.2 ms to build)."""
    p = argparse.ArgumentParser(prog="lightci", description="A lightweight self-hosted CI server.")
    p.add_argument(*HOME[0], **HOME[1])
    p.add_argument("--version", action="version", version=f"lightci {__version__}")
    # prog given: argparse would build a HelpFormatter for it, which imports shutil (~2 ms).
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", prog="lightci")
    for name, (func, help, arguments) in COMMANDS.items():
        if chosen and name != chosen:
            continue
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(func=func)
        c.add_argument(*HOME[0], **HOME[1], default=argparse.SUPPRESS)  # after the command too
        for flags, options in arguments:
            c.add_argument(*flags, **options)
    return p


def command_in(argv: list[str]) -> str | None:
    """The command argv names when only --home comes before it; else None (then the
    whole parser answers: help, a typo, an abbreviated option)."""
    if argv[:1] == ["--home"]:
        argv = argv[2:]
    elif argv[:1] and argv[0].startswith("--home="):
        argv = argv[1:]
    return argv[0] if argv and argv[0] in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(command_in(argv)).parse_args(argv)
    if args.command == "trigger":  # a running lightci of the home queues it: no peewee here
        try:
            code = remote.trigger(resolve_home(args.home), args)
        except BrokenPipeError as exc:  # a reader that left (`| head -1`): a line, as below
            print(f"lightci: {exc.strerror}", file=sys.stderr)
            return 2
        if isinstance(code, int):
            return code
        args.resume = code  # None: queue it here; a Resume: follow what the server queued
    module, _, name = args.func.partition(":")
    if module != "home":  # loaded like a command's module: its lightci.config costs trigger
        importlib.import_module("lightci.cli.drivers").skip_other_drivers(args.home)
    # Only now does peewee load (the home module binds the models), and only the chosen
    # command's module: `trigger` never imports the web server, the runner or Docker
    # (see the README's architecture section). The cyclic GC waits: its ~45 passes over
    # what these imports make (and keep) cost ~4 ms and free nothing. In a fresh process
    # that is the lot of its modules, frozen so that later passes skip them too.
    fresh = "lightci.models" not in sys.modules
    gc.disable()
    try:
        home = importlib.import_module("lightci.cli.home")
        command = getattr(importlib.import_module(f"lightci.cli.{module}"), name)
    finally:
        if fresh:
            gc.freeze()
        gc.enable()
    args.server = args.command in SERVERS  # a server makes its home; others need one there
    try:
        return command(args)
    except home.FAILURES as exc:  # a read-only or full home, a bad argument: not a traceback
        return home.failed(exc, sys.stderr)
    except KeyboardInterrupt:
        return 130
    finally:
        home.close()


def run() -> None:
    """The `lightci` program: main(), then out.

    A command that is done (not a server, no thread left) leaves by os._exit
    once its output is flushed: the interpreter's teardown of the modules it
    loaded costs ~12 ms, a tenth of `lightci trigger`, and frees nothing the
    kernel does not. main() closed the database.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if command_in(argv) in (None, *SERVERS) or threading.active_count() > 1:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # a reader that left (`| head`): Python's own exit reports it
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    run()
