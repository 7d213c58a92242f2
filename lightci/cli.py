"""The `lightci` command. Each command is thin: parse, call the domain, print.

The CLI works on the local home directly; no server needs to run. A UserError
becomes a message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from lightci import UserError, __version__

FOLLOW_INTERVAL = 0.2


def _home(args) -> Path:
    """Fix the home for this process (and the modules that read LIGHTCI_HOME at import)."""
    from lightci.config import resolve_home

    home = resolve_home(args.home)
    os.environ["LIGHTCI_HOME"] = str(home)
    return home


def _ready(args):
    from lightci import models
    from lightci.config import settings

    cfg = settings(_home(args))
    models.bind(cfg)
    return cfg


def example_jobs() -> Path:
    """The example jobs: the source checkout's jobs/, else the installed copy."""
    for candidate in (
        Path(__file__).resolve().parent.parent / "jobs",
        Path(sys.prefix) / "share" / "lightci" / "jobs",
        Path(__file__).resolve().parent.parent / "share" / "lightci" / "jobs",  # zipapp (shiv)
    ):
        if (candidate / "hello").is_dir():
            return candidate
    raise UserError("the example jobs are not installed (expected share/lightci/jobs)")


def cmd_init(args) -> int:
    from lightci.config import CONFIG_TEMPLATE

    home = Path(args.dir or _home(args)).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "lightci.toml"
    if not config.exists():
        config.write_text(CONFIG_TEMPLATE)
    jobs_dir = home / "jobs"
    jobs_dir.mkdir(exist_ok=True)
    for example in sorted(example_jobs().iterdir()):
        if example.is_dir() and not (jobs_dir / example.name).exists():
            shutil.copytree(example, jobs_dir / example.name)
    for sub in ("builds", "caches"):
        (home / sub).mkdir(exist_ok=True)
    print(f"lightci home ready at {home}")
    print(f"  export LIGHTCI_HOME={home}")
    print("  lightci serve          # web, worker and scheduler in one process")
    print("  lightci trigger hello --wait")
    return 0


def cmd_jobs(args) -> int:
    from lightci import jobs
    from lightci.models import Build

    cfg = _ready(args)
    good, broken = jobs.load_all(cfg)
    for job in good:
        last = Build.select().where(Build.job == job.name).order_by(Build.id.desc()).first()
        state = f"#{last.number} {last.status}" if last else "never built"
        print(f"{job.name:<24} {state:<18} {job.description}")
    for name, error in broken.items():
        print(f"{name:<24} {'BROKEN':<18} {error}")
    if not good and not broken:
        print(f"no jobs in {cfg.jobs_dir}")
    return 0


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"-p takes NAME=VALUE, got {pair!r}")
        params[name] = value
    return params


def cmd_trigger(args) -> int:
    from lightci import builds

    _ready(args)
    build = builds.trigger(
        args.job,
        branch=args.branch,
        commit=args.commit,
        params=_parse_params(args.param),
        trigger="cli",
    )
    print(build.id, flush=True)
    print(f"queued {build.label()} key {build.key}", file=sys.stderr)
    if not args.wait:
        return 0
    return _wait(build.id)


def _wait(build_id: int) -> int:
    """Show the queue position while waiting, then the live log; exit by the result."""
    from lightci import builds
    from lightci.config import settings

    shown = ""
    tty = sys.stderr.isatty()
    last_print = 0.0
    while True:
        build = builds.get(build_id)
        if build.status != "queued":
            break
        state = builds.status()
        line = (
            f"waiting: position {builds.position(build)}, slots "
            f"{state['slots_used']}/{state['slots']} in use, "
            f"{int(time.time() - build.queued_at)}/{build.queue_timeout} s"
        )
        now = time.time()
        if tty:
            print(f"\r{line}\033[K", end="", file=sys.stderr, flush=True)
        elif line.split(",")[:2] != shown.split(",")[:2] or now - last_print >= 5:
            print(line, file=sys.stderr, flush=True)
            last_print = now
        shown = line
        time.sleep(0.25)
    if tty and shown:
        print(file=sys.stderr)
    final = _follow(build_id, settings())
    if final.error:
        print(f"{final.label()}: {final.status} ({final.error})", file=sys.stderr)
    else:
        print(f"{final.label()}: {final.status}", file=sys.stderr)
    return 0 if final.status == "success" else 1 if final.status == "failed" else 2


def _follow(build_id: int, cfg):
    """Print the log as it grows until the build is final; returns the final row."""
    from lightci import builds, workspace

    offset = 0
    out = sys.stdout.buffer
    while True:
        build = builds.get(build_id)
        path = workspace.log_path(cfg, build)
        final = build.is_final
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            out.write(chunk)
            out.flush()
            offset += len(chunk)
        if final:
            return build
        time.sleep(FOLLOW_INTERVAL)


def cmd_status(args) -> int:
    from lightci import builds

    _ready(args)
    state = builds.status()
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    print(f"slots {state['slots_used']}/{state['slots']} in use")
    print(f"running ({len(state['running'])}):")
    for b in state["running"]:
        age = b["heartbeat_age"]
        print(
            f"  {b['id']:>6}  {b['job']} #{b['number']}  key {b['key']}  stage {b['stage'] or '-'}"
            f"  pid {b['pid']} on {b['worker'].split('@', 1)[-1]}  heartbeat {age} s ago"
            f"  {b['duration']:.0f} s"
        )
    print(f"queued ({len(state['queued'])}):")
    for b in state["queued"]:
        print(
            f"  {b['id']:>6}  {b['job']} #{b['number']}  key {b['key']}  position {b['position']}"
            f"  waited {b['waited']:.0f} s"
        )
    return 0


def cmd_show(args) -> int:
    from lightci import builds
    from lightci.models import as_dict

    _ready(args)
    data = as_dict(builds.get(args.build))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for name, value in data.items():
        if value not in (None, "", {}):
            print(f"{name:<13} {json.dumps(value) if isinstance(value, dict) else value}")
    return 0


def cmd_log(args) -> int:
    from lightci import builds, workspace

    cfg = _ready(args)
    build = builds.get(args.build)
    if args.follow:
        _follow(build.id, cfg)
        return 0
    path = workspace.log_path(cfg, build)
    if not path.exists():
        raise UserError(f"build {build.id} has no log yet ({build.status})", status=404)
    with open(path, "rb") as f:
        shutil.copyfileobj(f, sys.stdout.buffer)
    return 0


def cmd_cancel(args) -> int:
    from lightci import builds

    _ready(args)
    build = builds.cancel(args.build)
    if build.status == "cancelled":
        print(f"{build.label()} cancelled")
    else:
        print(f"{build.label()} is {build.status}: its worker will stop it")
    return 0


def cmd_retry(args) -> int:
    from lightci import builds

    _ready(args)
    build = builds.retry(args.build)
    print(build.id)
    if args.wait:
        return _wait(build.id)
    return 0


def _consumer(cfg, workers: int):
    from lightci.tasks import huey

    return huey.create_consumer(
        workers=workers, worker_type="thread", periodic=False, check_worker_health=True
    )


def cmd_worker(args) -> int:
    cfg = _ready(args)
    _consumer(cfg, args.workers or max(4, cfg.slots)).run()
    return 0


def cmd_serve(args) -> int:
    cfg = _ready(args)
    host = args.host or cfg["server"]["host"]
    port = args.port or cfg["server"]["port"]
    try:
        from lightci import web
    except ImportError:
        web = None
    if web is not None:
        threading.Thread(
            target=web.serve, args=(host, port), name="lightci-web", daemon=True
        ).start()
    try:
        from lightci import upkeep
    except ImportError:
        upkeep = None
    if upkeep is not None:
        upkeep.start()
    print(f"lightci serving {cfg.home} on http://{host}:{port}", file=sys.stderr, flush=True)
    _consumer(cfg, args.workers or max(4, cfg.slots)).run()
    return 0


def cmd_web(args) -> int:
    from lightci import web

    cfg = _ready(args)
    host = args.host or cfg["server"]["host"]
    port = args.port or cfg["server"]["port"]
    print(f"lightci web for {cfg.home} on http://{host}:{port}", file=sys.stderr, flush=True)
    web.serve(host, port)
    return 0


def cmd_scheduler(args) -> int:
    from lightci import upkeep

    _ready(args)
    print("lightci scheduler: sweeps, queue expiry, retention", file=sys.stderr, flush=True)
    return upkeep.run_forever()


def _size(size: float) -> str:
    """A size for people: 512 B, 20.0 KB, 1.5 MB, 3.2 GB."""
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def cmd_cleanup(args) -> int:
    from lightci import upkeep

    _ready(args)
    result = upkeep.cleanup(days=args.days, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for b in result["builds"]:
        print(
            f"{verb} build {b['id']} ({b['job']} #{b['number']}, {b['status']}) {_size(b['bytes'])}"
        )
    for d in result["dirs"]:
        print(f"{verb} dir {d['path']} (no build row) {_size(d['bytes'])}")
    for c in result["caches"]:
        print(f"{verb} cache {c['path']} (unused {c['unused_days']} days) {_size(c['bytes'])}")
    print(
        f"{verb} {len(result['builds'])} builds, {len(result['dirs'])} dirs, "
        f"{len(result['caches'])} caches: {_size(result['bytes'])} "
        f"(older than {result['days']:g} days, keeping the newest {result['keep_last']} per job)"
    )
    return 0


def cmd_force_unlock(args) -> int:
    from lightci import upkeep

    _ready(args)
    ended = upkeep.force_unlock(args.build, all=args.all)
    for build in ended:
        print(f"{build.label()} (id {build.id}) ended lost: {build.error}")
    if not ended:
        print("nothing was running")
    return 0


def cmd_monitor(args) -> int:
    from lightci import upkeep

    _ready(args)
    report = upkeep.monitor(args.build)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    disk = report["disk"]
    if args.build:
        print(
            f"{report['build']} (id {report['id']}) {report['status']}, "
            f"{report['age_days']} days old"
        )
        print(
            f"  dir   {report['path']}  {_size(report['bytes'])}"
            + ("" if report["exists"] else " (removed)")
        )
        print(f"  log   {_size(report['log_bytes'])}")
        if report["cache"]:
            print(f"  cache {report['cache']['path']}  {_size(report['cache']['bytes'])}")
    else:
        print(f"builds   {_size(report['builds_bytes'])}")
        for j in report["jobs"]:
            print(
                f"  {j['job']:<24} {j['builds']:>5} dirs  {_size(j['bytes']):>10}  "
                f"oldest {j['oldest_days']} days"
            )
        print(f"caches   {_size(report['caches_bytes'])}")
        for c in report["caches"]:
            print(
                f"  {c['job'] + '/' + c['cache']:<40} {_size(c['bytes']):>10}  "
                f"last change {c['age_days']} days ago"
            )
        print(f"mirrors  {_size(report['mirrors_bytes'])}")
    print(
        f"disk     {_size(disk['free_bytes'])} free of {_size(disk['total_bytes'])} "
        f"(warning below {_size(disk['warn_bytes'])})"
    )
    for warning in report["warnings"]:
        print(f"WARNING: {warning}")
    return 0


def cmd_deployments(args) -> int:
    from lightci import deploy

    _ready(args)
    rows = deploy.listing(args.job, args.limit)
    if args.json:
        print(json.dumps([deploy.as_dict(d) for d in rows], indent=2))
        return 0
    if not rows:
        print("no deployments" + (f" of {args.job}" if args.job else ""))
    for d in rows:
        row = deploy.as_dict(d)
        state = d.state + (f" ({d.health})" if d.state == "live" and d.health else "")
        print(
            f"{d.id:>5}  {d.job:<20} {state:<17} {d.slot:<5}  {d.image:<36} "
            f"{row['created_at']}  {d.trigger}"
        )
        if d.error:
            print(f"       {d.error.splitlines()[0]}")
    return 0


def cmd_rollback(args) -> int:
    from lightci import deploy

    _ready(args)
    started = deploy.rollback(args.job, trigger="cli")
    print(f"{args.job}: starting {started.image} in {started.slot}, health checks follow")
    final = deploy.wait(started.id)
    if final.state == "live":
        print(f"{args.job}: /apps/{args.job}/ serves {final.image} again")
        return 0
    print(f"{args.job}: rollback failed: {final.error or final.state}", file=sys.stderr)
    return 1


def cmd_undeploy(args) -> int:
    from lightci import deploy

    _ready(args)
    stopped = deploy.undeploy(args.job)
    print(f"{args.job}: {stopped} container(s) stopped, route removed")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightci", description="A lightweight self-hosted CI server.")
    p.add_argument("--home", help="the lightci home (default: $LIGHTCI_HOME or ./.lightci)")
    p.add_argument("--version", action="version", version=f"lightci {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help):
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(func=func)
        return c

    c = command("init", cmd_init, "create a home directory with the example jobs")
    c.add_argument("dir", nargs="?")
    c = command("serve", cmd_serve, "web, worker and scheduler in one process")
    c.add_argument("--host")
    c.add_argument("--port", type=int)
    c.add_argument("--workers", type=int, help="worker threads (default: max(4, slots))")
    c = command("web", cmd_web, "the web server alone: pages, JSON API, webhooks")
    c.add_argument("--host")
    c.add_argument("--port", type=int)
    c = command("worker", cmd_worker, "run builds (a Huey consumer with the right settings)")
    c.add_argument("--workers", type=int, help="worker threads (default: max(4, slots))")
    command("jobs", cmd_jobs, "list jobs and their last build")
    c = command("trigger", cmd_trigger, "queue a build; prints its id first")
    c.add_argument("job")
    c.add_argument("-p", "--param", action="append", metavar="K=V", help="override a param")
    c.add_argument("--branch", default="")
    c.add_argument("--commit", default="")
    c.add_argument(
        "--wait",
        action="store_true",
        help="wait, show the live log, exit 0 success / 1 failed / 2 otherwise",
    )
    c = command("status", cmd_status, "slots in use, running builds, the queue")
    c.add_argument("--json", action="store_true")
    c = command("show", cmd_show, "one build")
    c.add_argument("build")
    c.add_argument("--json", action="store_true")
    c = command("log", cmd_log, "a build's log")
    c.add_argument("build")
    c.add_argument("-f", "--follow", action="store_true")
    c = command("cancel", cmd_cancel, "cancel a queued or running build")
    c.add_argument("build")
    c = command("retry", cmd_retry, "queue a build again with the same inputs")
    c.add_argument("build")
    c.add_argument("--wait", action="store_true")
    command("scheduler", cmd_scheduler, "run upkeep: orphan sweep, queue expiry, retention")
    c = command("cleanup", cmd_cleanup, "remove old builds and unused caches (retention)")
    c.add_argument("--days", type=float, help="older than N days (default: retention_days)")
    c.add_argument("--dry-run", action="store_true", help="show what would go and its size")
    c.add_argument("--json", action="store_true")
    c = command(
        "force-unlock",
        cmd_force_unlock,
        "end stuck running builds as lost and kill their processes",
    )
    c.add_argument("build", nargs="?")
    c.add_argument("--all", action="store_true", help="every running build")
    c = command("monitor", cmd_monitor, "disk use of builds and caches, free space, warnings")
    c.add_argument("build", nargs="?")
    c.add_argument("--json", action="store_true")
    c = command("deployments", cmd_deployments, "Docker deployments, newest first")
    c.add_argument("job", nargs="?")
    c.add_argument("--limit", type=int, default=20)
    c.add_argument("--json", action="store_true")
    c = command("rollback", cmd_rollback, "redeploy the previous image, health-checked")
    c.add_argument("job")
    c = command("undeploy", cmd_undeploy, "stop a job's containers and free its route")
    c.add_argument("job")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"lightci: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
