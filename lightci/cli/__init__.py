"""The `lightci` command: parse, load the one module the command lives in, run it.

Each command is thin: parse, call the domain, print. The CLI works on the local
home directly; no server needs to run. A UserError becomes a message on
stderr and exit code 2.

    home     init, and the home every command works on
    builds   jobs, trigger, status, show, log, cancel, retry
    servers  serve, web, worker, scheduler
    upkeep   cleanup, force-unlock, monitor
    deploys  deployments, rollback, undeploy
"""

from __future__ import annotations

import argparse
import importlib
import sqlite3
import sys

import peewee

from lightci import __version__
from lightci.cli.home import why
from lightci.errors import UserError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightci", description="A lightweight self-hosted CI server.")
    p.add_argument("--home", help="the lightci home (default: $LIGHTCI_HOME or ./.lightci)")
    p.add_argument("--version", action="version", version=f"lightci {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(func=func)
        return c

    c = command("init", "home:init", "create a home directory with the example jobs")
    c.add_argument("dir", nargs="?")
    c = command("serve", "servers:serve", "web, worker and scheduler in one process")
    c.add_argument("--host")
    c.add_argument("--port", type=int)
    c.add_argument("--workers", type=int, help="worker threads (default: max(4, slots))")
    c = command("web", "servers:web", "the web server alone: pages, JSON API, webhooks")
    c.add_argument("--host")
    c.add_argument("--port", type=int)
    c = command("worker", "servers:worker", "run builds (a Huey consumer with the right settings)")
    c.add_argument("--workers", type=int, help="worker threads (default: max(4, slots))")
    command("jobs", "builds:list_jobs", "list jobs and their last build")
    c = command("trigger", "builds:trigger", "queue a build; prints its id first")
    c.add_argument("job")
    c.add_argument("-p", "--param", action="append", metavar="K=V", help="override a param")
    c.add_argument("--branch", default="")
    c.add_argument("--commit", default="")
    c.add_argument("-P", "--priority", type=int, help="higher is claimed first across keys")
    c.add_argument(
        "--wait",
        action="store_true",
        help="wait, show the live log, exit 0 success / 1 failed / 2 otherwise",
    )
    c = command("status", "builds:status", "slots in use, running builds, the queue")
    c.add_argument("--json", action="store_true")
    c = command("show", "builds:show", "one build")
    c.add_argument("build")
    c.add_argument("--json", action="store_true")
    c = command("log", "builds:log", "a build's log")
    c.add_argument("build")
    c.add_argument("-f", "--follow", action="store_true")
    c = command("cancel", "builds:cancel", "cancel a queued or running build")
    c.add_argument("build")
    c = command("retry", "builds:retry", "queue a build again with the same inputs")
    c.add_argument("build")
    c.add_argument("--wait", action="store_true")
    command("scheduler", "servers:scheduler", "run upkeep: orphan sweep, queue expiry, retention")
    c = command("cleanup", "upkeep:cleanup", "remove old builds and unused caches (retention)")
    c.add_argument("--days", type=float, help="older than N days (default: retention_days)")
    c.add_argument("--dry-run", action="store_true", help="show what would go and its size")
    c.add_argument("--json", action="store_true")
    c = command(
        "force-unlock",
        "upkeep:force_unlock",
        "end stuck running builds as lost and kill their processes",
    )
    c.add_argument("build", nargs="?")
    c.add_argument("--all", action="store_true", help="every running build")
    c = command("monitor", "upkeep:monitor", "disk use of builds and caches, free space, warnings")
    c.add_argument("build", nargs="?")
    c.add_argument("--json", action="store_true")
    c = command("deployments", "deploys:deployments", "Docker deployments, newest first")
    c.add_argument("job", nargs="?")
    c.add_argument("--limit", type=int, default=20)
    c.add_argument("--json", action="store_true")
    c = command("rollback", "deploys:rollback", "redeploy the previous image, health-checked")
    c.add_argument("job")
    c.add_argument("--to", type=int, help="[gitops]: re-apply this bump's values (its id)")
    c.add_argument("--no-wait", action="store_true", help="[gitops]: queue the rollback only")
    c = command("undeploy", "deploys:undeploy", "stop a job's containers and free its route")
    c.add_argument("job")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    module, _, name = args.func.partition(":")
    try:
        # Only the chosen command's module loads: `trigger` never imports the web
        # server, the runner or Docker (see the README's architecture section).
        command = getattr(importlib.import_module(f"lightci.cli.{module}"), name)
        return command(args)
    except UserError as exc:
        print(f"lightci: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.OperationalError, peewee.OperationalError) as exc:
        # A read-only or full home, a file lightci may not open: one line, not a traceback.
        print(f"lightci: {why(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
