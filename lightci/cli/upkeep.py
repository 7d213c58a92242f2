"""Upkeep by hand: cleanup, force-unlock, monitor."""

from __future__ import annotations

import json

from lightci import recovery, retention
from lightci.cli.home import ready
from lightci.errors import UserError


def _size(size: float) -> str:
    """A size for people: 512 B, 20.0 KB, 1.5 MB, 3.2 GB."""
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def cleanup(args) -> int:
    ready(args)
    result = retention.cleanup(days=args.days, dry_run=args.dry_run)
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


def force_unlock(args) -> int:
    ready(args)
    if args.build and args.all:
        raise UserError("give a build or --all, not both")
    ended = recovery.force_unlock(args.build, all=args.all)
    for build in ended:
        print(f"{build.label()} (id {build.id}) ended lost: {build.error}")
    if not ended:
        print("nothing was running")
    return 0


def monitor(args) -> int:
    ready(args)
    report = retention.monitor(args.build)
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
