"""Always-run stages: `after = ["report"]` runs once the stages are done, whatever happened.

A failure, a timeout or a cancel ends the stages; the after stages run then,
with LIGHTCI_RESULT set to the result, under the build's remaining deadline
plus a short grace, and a cancel does not stop them. Their output is in the
build's log; they never change the result. The stage itself runs through the
runner's own function (passed in), so it is watched like any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lightci import container, sandbox, workspace
from lightci.config import Settings
from lightci.errors import UserError
from lightci.jobs import Job
from lightci.models import DEPLOYING, Build

GRACE = 30  # seconds the after stages get past the build's deadline


def run_after(
    cfg: Settings,
    job: Job,
    build: Build,
    dirs,
    secrets: dict,
    out,
    watched,
    status: str,
    run_host_stage: Callable[..., int],
) -> None:
    """Run the job's after stages with LIGHTCI_RESULT=status; the result stays what it was."""
    if not job.after or status == DEPLOYING:  # a deploy's result comes later
        return
    watched.kill_reason = watched.kill_status = ""
    watched.term_sent_at = 0.0
    watched.after = True  # a cancel already ended the stages; these still run
    watched.deadline = max(watched.deadline, time.time()) + GRACE
    try:
        _stages(cfg, job, build, dirs, secrets, out, watched, status, run_host_stage)
    except (UserError, OSError) as exc:  # the result is settled: this is only the log's
        out.note(f"after stages failed: {exc}")


def _stages(cfg, job, build, dirs, secrets, out, watched, status, run_host_stage) -> None:
    box = None if job.docker else sandbox.choose(cfg)
    env = workspace.environment(cfg, job, build, dirs, secrets)
    env["LIGHTCI_RESULT"] = status
    for i, name in enumerate(job.after):
        if watched.kill_reason:
            out.note(f"after stages stopped: {watched.kill_reason}")
            return
        if not job.script(name).exists():
            out.note(f"after stage {name}: no script {job.dir / name}.sh")
            continue
        position = len(job.stages) + i
        if box is None:
            code = container.run_stage(job, build, name, position, env, dirs, out, watched)
        else:
            code = run_host_stage(cfg, box, job, build, name, position, env, dirs, out, watched)
        out.note(f"after stage {name} exited {code}; the build's result stays {status}")
