"""One claimed build: env dirs, checkout, stages, log, timeout, cancel.

Stages run in their own session (setsid), started by subprocess from the build's
thread (lightci.stageproc), inside bubblewrap where it works (lightci.sandbox),
so a timeout or a cancel can end the whole stage, grandchildren included. Their
output comes through a pipe read in bounded chunks. One watchdog thread per
worker process enforces deadlines, notices cancels, kills what a finished stage
left behind, writes the heartbeat of every build the process holds, and retries
a release the database refused (a full disk) until the build's final state is
written.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable

from lightci import (
    checkout,
    container,
    deploy,
    gitops,
    jobs,
    repoconfig,
    sandbox,
    stageproc,
    workspace,
)
from lightci.artifacts import collect as keep_artifacts
from lightci.cgroup import MemoryLimit
from lightci.claims import Lease, claim, release
from lightci.config import settings
from lightci.errors import UserError
from lightci.finishing import run_after
from lightci.logs import BuildLog, Masker, hide_credentials, stage_pipe
from lightci.models import (
    CANCELLED,
    DEPLOYING,
    FAILED,
    RUNNING,
    SUCCESS,
    Build,
    run_sql,
    write_lock,
)
from lightci.watchdog import Watched, watchdog

log = logging.getLogger(__name__)

# A stage's rows in plain SQL: peewee would compose these anew for every stage.
STAGE_STARTED_SQL = "INSERT INTO stage (build_id, name, position, started_at) VALUES (?, ?, ?, ?)"
STAGE_RUNS_SQL = "UPDATE build SET stage = ?, pgid = ? WHERE id = ?"
STAGE_ENDED_SQL = (
    "UPDATE stage SET finished_at = ?, exit_code = ? "
    "WHERE build_id = ? AND position = ? AND finished_at IS NULL"
)


def stop(grace: float, hurry: threading.Event, reason: str = "worker stopped") -> None:
    """A stopping worker: claim nothing more, give running builds `grace` seconds, end the rest.

    The rest end cancelled with `reason`: the watchdog TERMs, then KILLs each
    stage's group and run() releases the build. Whatever this process still
    leases after that (a claim not yet running, a stage that will not die) is
    released here, so nothing waits for the sweeper.
    """
    watchdog.stopping.set()
    deadline = time.time() + grace
    while watchdog.held() and time.time() < deadline and not hurry.is_set():
        hurry.wait(0.1)
    for watched in watchdog.held():
        watchdog.kill(watched, CANCELLED, reason)
    deadline = time.time() + settings()["builds"]["kill_grace"] + 5
    while watchdog.held() and time.time() < deadline:
        time.sleep(0.1)
    lease = Lease.mine()
    try:
        mine = Build.select().where(
            Build.host == lease.host, Build.pid == lease.pid, Build.status == RUNNING
        )
        for build in list(mine):  # read first: writing while a SELECT is open can fail at once
            if build.pgid:
                sandbox.kill_group(build.pgid, signal.SIGKILL)
            release(build.id, CANCELLED, error=reason)
    except Exception:
        log.exception("could not release this worker's builds; the sweeper will")


def drain(wake: Callable[[], None]) -> int:
    """Claim and run builds until none is runnable; returns how many ran."""
    lease = Lease.mine()
    ran = 0
    while not watchdog.stopping.is_set():
        claimed = claim(lease, look_first=ran == 0)
        if claimed is None:
            return ran
        if claimed.more:
            wake()
        run(claimed.build)
        ran += 1
    return ran


def run(build: Build) -> str:
    """Run one claimed build to its final state; never leaves it active."""
    cfg = settings()
    watched = Watched(build.id, build.timeout, deadline=time.time() + build.timeout)
    watchdog.hold(watched)
    status, fields = FAILED, {}
    try:
        job = jobs.load(cfg, build.job)
        dirs = workspace.dirs_for(cfg, job, build)
        dirs.create()
        try:
            secrets = workspace.job_secrets(cfg, job, build)
        except UserError as exc:
            secrets, fields = {}, {"error": str(exc)}
        with BuildLog(dirs.log, Masker(list(secrets.values()))) as out:
            lease = Lease.mine()
            out.note(
                f"build {build.label()} (id {build.id}) key {build.key} "
                f"on worker {lease.pid}@{lease.host}"
            )
            if fields:
                out.note(fields["error"])
            else:
                ran = _run_stages(cfg, job, build, dirs, secrets, out, watched)
                status, fields, job, dirs = ran  # the commit's pipeline when config = "repo"
                args = (cfg, job, build, dirs, secrets, out, watched, status, _run_stage)
                run_after(*args)
                keep_artifacts(job, dirs, out)
            if out.lost and status == SUCCESS:
                status, fields = FAILED, {"error": out.lost}
            if status != DEPLOYING:
                out.note(
                    f"finished: {status}" + (f" ({fields['error']})" if fields.get("error") else "")
                )
    except UserError as exc:
        status, fields = FAILED, {"error": str(exc)}
    except Exception as exc:
        if workspace.disk_full_error(exc):
            status, fields = FAILED, {"error": f"disk full: {exc}"}
        else:
            log.exception("build %s crashed", build.id)
            status, fields = FAILED, {"error": f"internal error: {exc!r}"}
            workspace.append_log(cfg, build, traceback.format_exc())
    finally:
        if status not in (SUCCESS, DEPLOYING):
            full = workspace.disk_full(cfg)
            if full and not fields.get("error", "").startswith("disk full"):
                fields["error"] = f"{full} ({fields.get('error') or status})"
        if status != DEPLOYING:  # else the deploy's health checks release it
            _release(cfg, build, watched, status, fields)
        else:
            watchdog.drop(build.id)
    return status


def _release(cfg, build: Build, watched: Watched, status: str, fields: dict) -> None:
    """Write the final state; if the database refuses (a full disk), the watchdog retries."""
    if watched.memory_peak:
        fields = {**fields, "memory_peak": watched.memory_peak}
    try:
        ours = release(watched.build_id, status, **fields)
    except Exception as exc:
        log.warning("build %s: cannot write its final state yet: %s", watched.build_id, exc)
        watched.unreleased = (status, fields)
        return
    watchdog.drop(watched.build_id)
    row = None if ours else Build.get_or_none(Build.id == build.id)
    if row is not None:  # force-unlock or a sweep ended it first: the log's last word is the row's
        workspace.append_log(
            cfg, build, f"[lightci] the build had ended already: {row.status} ({row.error})\n"
        )


def _run_stages(cfg, job, build, dirs, secrets, out: BuildLog, watched: Watched):
    """Checkout (when the job has a repo), then each stage; returns (status, fields, the job
    and dirs the build ran: with config = "repo", the commit's pipeline)."""
    if gitops.is_rollback(build):  # a rollback runs no stages: it reverts a bump
        return (*gitops.run_rollback(cfg, job, build, out), job, dirs)
    box = None if job.docker else sandbox.choose(cfg)  # "bwrap" that cannot work: UserError
    if box is not None and not box.isolated:
        out.note(f"this build is not isolated from the host: {box.reason}")
    env = workspace.environment(cfg, job, build, dirs, secrets)
    if job.repo:
        started = time.time()
        Build.update(stage="checkout").where(Build.id == build.id).execute()
        shown = hide_credentials(job.repo)
        out.note(f"==> checkout {shown} ({build.commit or build.branch or 'HEAD'})")
        try:
            sha = checkout.checkout(cfg, job, build, dirs, out)
        except UserError as exc:
            return FAILED, {"error": f"checkout failed: {exc}", "stage": "checkout"}, job, dirs
        env["LIGHTCI_COMMIT"] = sha
        Build.update(commit=sha).where(Build.id == build.id).execute()
        out.note(f"<== checkout {sha} in {time.time() - started:.2f} s")
        if job.config == "repo":  # the commit's .lightci/ is the pipeline
            try:
                job, dirs, env = repoconfig.apply(cfg, job, build, dirs, sha, secrets, out, watched)
            except UserError as exc:
                return FAILED, {"error": str(exc), "stage": "checkout"}, job, dirs
            box = None if job.docker else sandbox.choose(cfg)
    for position, name in enumerate(job.stages):
        if watched.kill_reason:
            break
        if box is None:
            code = container.run_stage(job, build, name, position, env, dirs, out, watched)
        else:
            try:
                code = _run_stage(cfg, box, job, build, name, position, env, dirs, out, watched)
            except UserError as exc:  # it could not start: a failed stage (after stages run)
                return FAILED, {"error": f"stage {name}: {exc}", "stage": name}, job, dirs
        if watched.kill_reason:
            break
        if code != 0:
            error = f"stage {name} exited {code}"
            full = workspace.disk_full(cfg)  # now, while what filled it may still be there
            error = f"{full} ({error})" if full else error
            return FAILED, {"exit_code": code, "stage": name, "error": error}, job, dirs
    if watched.kill_reason:
        return watched.kill_status, {"error": watched.kill_reason}, job, dirs
    if build.pr is not None and (job.images or job.gitops or job.deploy):
        # Someone's proposal, a fork's maybe: tested, never shipped. Its images would
        # go out with the registry's credentials, and its container would be the live one.
        out.note("a pull request's build: no images, bump or deploy (those are its merge's)")
        return SUCCESS, {"exit_code": 0}, job, dirs
    if job.images or job.gitops:  # component images, then the deployment-repo bump
        status, fields = gitops.ship(cfg, job, build, dirs, out, watched)
        if status != SUCCESS:
            return status, fields, job, dirs
    if job.deploy:  # image, container, then the scheduler's health checks end the build
        return (*deploy.start(cfg, job, build, dirs, env, out, watched), job, dirs)
    return SUCCESS, {"exit_code": 0}, job, dirs


def _run_stage(cfg, box, job, build, name, position, env, dirs, out: BuildLog, watched) -> int:
    """One host stage, its output through a pipe this process reads in bounded chunks."""
    script = job.script(name)
    command = [str(script)] if os.access(script, os.X_OK) else ["bash", str(script)]
    argv = box.argv(cfg, job, dirs, command)
    started = time.time()
    out.note(f"==> stage {name} ({job.shown(name)})")
    memory = MemoryLimit.for_stage(job, build, position, out)
    reader, writer = stage_pipe()
    try:
        procs = memory.procs if memory else None
        proc = stageproc.start(argv, env, str(dirs.workspace), writer, procs, dirs.ended)
    except BaseException:
        os.close(reader)
        if memory is not None:  # its cgroup goes, as after a stage that ran
            memory.close(watched)
        raise
    finally:
        os.close(writer)
    watched.proc, watched.isolated = proc, box.isolated
    try:
        with write_lock():
            run_sql(STAGE_STARTED_SQL, build.id, name, position, started)
            run_sql(STAGE_RUNS_SQL, name, proc.pid, build.id)
        if watched.kill_reason:  # cancelled while we were starting it
            watchdog.kill(watched, watched.kill_status, watched.kill_reason)
        out.pump(reader, proc.ended, proc.ended_fd)  # its output, until it ends
        code = proc.wait()
    finally:  # also when the database refused the stage's row: nothing runs on unwatched
        if box.isolated:  # its PID namespace ended with its main process
            sandbox.kill_group(proc.pid, signal.SIGKILL)
        else:
            sandbox.end_leftovers(proc.pid, dirs.workspace, build.started_at)
        if proc.exit_code is None:  # that refusal: reaped here, not by Popen's __del__
            proc.wait()
        try:
            out.drain(reader)  # what its leftovers wrote before they were killed
        finally:
            os.close(reader)
            if memory is not None:
                memory.close(watched)
            watched.proc = None
    out.flush()
    finished = time.time()
    out.note(f"<== stage {name} exited {code} after {finished - started:.2f} s")
    with write_lock():
        run_sql(STAGE_ENDED_SQL, finished, code, build.id, position)
    return code
