"""Commands on builds: jobs, trigger (--wait), status, show, log (-f), cancel, retry."""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import BinaryIO, TextIO

from lightci import builds, jobs, overview, workspace
from lightci.cli.home import ready
from lightci.config import settings
from lightci.errors import UserError
from lightci.models import FAILED, QUEUED, SUCCESS

FIRST_LOOK = 0.005  # seconds: a waiting CLI looks often at first (a quick build ends soon)...
LAST_LOOK = 0.25  # ... and less often the longer nothing changes


class Pause:
    """Sleep a little longer each time nothing changed; start over when something did.

    `trigger --wait` of a build that takes 20 ms returns within a few ms of its
    end, and one that takes an hour costs four looks a second.
    """

    def __init__(self):
        self.seconds = FIRST_LOOK

    def changed(self) -> None:
        self.seconds = FIRST_LOOK

    def sleep(self) -> None:
        time.sleep(self.seconds)
        self.seconds = min(LAST_LOOK, self.seconds * 1.5)


def list_jobs(args) -> int:
    cfg = ready(args)
    good, broken = jobs.load_all(cfg)
    for job in good:
        last = overview.last_build(job.name)
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


class Terminal:
    """Where a command's output goes: this process's stdout (bytes) and stderr, or a CLI's
    at the other end of the control socket (lightci.cli.control)."""

    def __init__(self, out: BinaryIO, err: TextIO, tty: bool):
        self.out, self.err, self.tty = out, err, tty

    @classmethod
    def here(cls) -> Terminal:
        return cls(sys.stdout.buffer, sys.stderr, sys.stderr.isatty())


def trigger(args) -> int:
    ready(args)
    resume = getattr(args, "resume", None)
    if resume is not None:  # the server that queued it stopped while --wait followed it
        print(
            f"lightci: the server stopped; following build {resume.build_id} here", file=sys.stderr
        )
        return _wait(resume.build_id, Terminal.here(), resume.offset)
    return queue(args, Terminal.here())


def queue(args, term: Terminal) -> int:
    """`trigger`, in this process or in the server that took it over the control socket."""
    build = builds.trigger(
        args.job,
        branch=args.branch,
        commit=args.commit,
        params=_parse_params(args.param),
        trigger="cli",
        priority=args.priority,
    )
    term.out.write(f"{build.id}\n".encode())
    term.out.flush()
    print(f"queued {build.label()} key {build.key}", file=term.err, flush=True)
    if not args.wait:
        return 0
    return _wait(build.id, term)


def _wait(build_id: int, term: Terminal, shown_log: int = 0) -> int:
    """Show the queue position while waiting, then the live log; exit by the result."""
    shown = ""
    tty, err = term.tty, term.err
    last_print = 0.0
    # The first line after LAST_LOOK: a build that starts at once (most) costs no
    # look at the whole queue.
    last_line = time.time()
    pause = Pause()
    while True:
        build = builds.get(build_id)
        if build.status != QUEUED:
            break
        now = time.time()
        if now - last_line >= LAST_LOOK:  # the queue's state costs more than the row
            last_line = now
            state = overview.status()
            line = (
                f"waiting: position {overview.position(build)}, slots "
                f"{state['slots_used']}/{state['slots']} in use, "
                f"{int(now - build.queued_at)}/{build.queue_timeout} s" + _outlook(state, build.id)
            )
            if tty:
                print(f"\r{line}\033[K", end="", file=err, flush=True)
            elif line.split(",")[:2] != shown.split(",")[:2] or now - last_print >= 5:
                print(line, file=err, flush=True)
                last_print = now
            shown = line
        pause.sleep()
    if tty and shown:
        print(file=err)
    final = _follow(build_id, settings(), term.out, shown_log)
    if final.error:
        print(f"{final.label()}: {final.status} ({final.error})", file=err)
    else:
        print(f"{final.label()}: {final.status}", file=err)
    return 0 if final.status == SUCCESS else 1 if final.status == FAILED else 2


def _outlook(state: dict, build_id: int) -> str:
    """'; memory: needs ~2.8 GB, 1.9 GB free in the budget; starts ~12:04:10 UTC'."""
    mine = next((b for b in state["queued"] if b["id"] == build_id), None)
    if mine is None:
        return ""
    start = f"; starts ~{mine['eta_start'][11:19]} UTC" if mine["eta_start"] else ""
    return f"; {mine['waiting_for']}{start}"


def _follow(build_id: int, cfg, out: BinaryIO, offset: int = 0):
    """Print the log from `offset` as it grows until the build is final; returns the final row."""
    pause = Pause()
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
            pause.changed()
        if final:
            return build
        pause.sleep()


def status(args) -> int:
    ready(args)
    state = overview.status()
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
            f"  {b['duration']:.0f} s" + _times(b)
        )
    print(f"queued ({len(state['queued'])}):")
    for b in state["queued"]:
        print(
            f"  {b['id']:>6}  {b['job']} #{b['number']}  key {b['key']}  position {b['position']}"
            f"  waited {b['waited']:.0f} s  {b['waiting_for']}" + _times(b)
        )
    return 0


def _times(b: dict) -> str:
    start, finish = b.get("eta_start"), b.get("eta_finish")
    return (f"  starts ~{start[11:19]}" if start else "") + (
        f"  ends ~{finish[11:19]} UTC" if finish else ""
    )


def show(args) -> int:
    ready(args)
    build = builds.get(args.build)
    data = overview.detail(build)  # as GET /api/builds/<id>
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for name, value in data.items():
        if value not in (None, "", {}):
            print(f"{name:<13} {json.dumps(value) if isinstance(value, dict | list) else value}")
    return 0


def log(args) -> int:
    cfg = ready(args)
    build = builds.get(args.build)
    if args.follow:
        _follow(build.id, cfg, sys.stdout.buffer)
        return 0
    path = workspace.log_path(cfg, build)
    if not path.exists():
        raise UserError(f"build {build.id} has no log yet ({build.status})", status=404)
    with open(path, "rb") as f:
        shutil.copyfileobj(f, sys.stdout.buffer)
    return 0


def cancel(args) -> int:
    ready(args)
    build = builds.cancel(args.build)
    if build.status == "cancelled":
        print(f"{build.label()} cancelled")
    else:
        print(f"{build.label()} is {build.status}: its worker will stop it")
    return 0


def retry(args) -> int:
    ready(args)
    build = builds.retry(args.build)
    print(build.id)
    if args.wait:
        return _wait(build.id, Terminal.here())
    return 0
