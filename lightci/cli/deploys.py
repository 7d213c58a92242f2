"""Docker deployments by hand: list, roll back, undeploy."""

from __future__ import annotations

import json
import sys

from lightci import deploy, gitops, healthchecks, jobs
from lightci.cli.home import ready
from lightci.config import settings
from lightci.container import engine_error, engine_failures
from lightci.errors import UserError
from lightci.models import LIVE, SUCCESS


def deployments(args) -> int:
    ready(args)
    rows = deploy.listing(args.job, args.limit)
    if args.json:
        print(json.dumps([deploy.as_dict(d) for d in rows], indent=2))
        return 0
    if not rows and args.job and args.job not in jobs.names(settings()):
        raise UserError(f"no job {args.job!r}")
    if not rows:
        print("no deployments" + (f" of {args.job}" if args.job else ""))
    for d in rows:
        row = deploy.as_dict(d)
        state = d.state + (f" ({d.health})" if d.state == LIVE and d.health else "")
        print(
            f"{d.id:>5}  {d.job:<20} {state:<17} {d.slot:<5}  {d.image:<36} "
            f"{row['created_at']}  {d.trigger}"
        )
        if d.error:
            print(f"       {d.error.splitlines()[0]}")
    for b in gitops.history(args.job, args.limit):  # GitOps bumps, rollbacks, re-applies
        row = gitops.as_dict(b)
        values = ", ".join(f"{k}={v}" for k, v in row["values"].items())
        print(
            f"bump {b.id:>4}  {b.job:<20} {b.kind:<8} {b.state:<9} {b.commit[:12] or '-':<12} "
            f"build #{b.build_number}  {row['created_at']}  {values}"
        )
        if b.error:
            print(f"       {b.error}")
    return 0


def _engine_refused(command):
    """A command that talks to Docker: what the engine refuses is one line, exit 2."""

    def run(args) -> int:
        try:
            return command(args)
        except engine_failures() as exc:
            raise UserError(engine_error(exc)) from None

    return run


@_engine_refused
def rollback(args) -> int:
    ready(args)
    if args.to is not None or gitops.has_gitops(args.job):
        return _gitops_rollback(args)
    started = deploy.rollback(args.job, trigger="cli")
    print(f"{args.job}: starting {started.image} in {started.slot}, health checks follow")
    final = healthchecks.wait(started.id)
    if final.state == LIVE:
        print(f"{args.job}: /apps/{args.job}/ serves {final.image} again")
        return 0
    print(f"{args.job}: rollback failed: {final.error or final.state}", file=sys.stderr)
    return 1


@_engine_refused
def undeploy(args) -> int:
    ready(args)
    stopped = deploy.undeploy(args.job)
    print(f"{args.job}: {stopped} container(s) stopped, route removed")
    return 0


def _gitops_rollback(args) -> int:
    """A [gitops] job: queue the rollback build (its own log); wait for it unless --no-wait."""
    action = gitops.request_rollback(args.job, to=args.to, trigger="cli")
    print(action.id, flush=True)
    what = f"re-apply of bump {args.to}" if args.to is not None else "revert of the last bump"
    print(f"queued {action.label()}: {what}", file=sys.stderr)
    if args.no_wait:
        return 0
    final = gitops.wait(action.id)
    bump = gitops.made_by(final.id)
    if final.status == SUCCESS:
        commit = bump.commit[:12] if bump and bump.commit else "no commit (nothing to change)"
        print(f"{args.job}: {final.label()} {final.status}: {commit}")
        return 0
    print(f"{args.job}: {final.label()} {final.status}: {final.error}", file=sys.stderr)
    return 1
