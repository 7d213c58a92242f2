"""GitOps: after a build's images, bump their tags in a deployment repository; roll back.

The deployment repository is cloned once per job under HOME/mirrors/gitops/
and fetched before every change. The YAML file is edited in place
(lightci.values), so comments, key order and quoting survive; only the values
named in [gitops] set change. The commit is pushed without force: a rejected
push (someone else bumped first) fetches, applies the values again on top of
theirs and pushes again, so no one's change is lost. A change that leaves the
file as it was makes no commit.

A rollback is a build of the job whose trigger is "rollback" (or
"rollback:<bump id>" to apply an earlier bump's values again): it runs under
the job's key, has its own log, and writes a Bump row like any bump.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from lightci import builds, images, jobs
from lightci.checkout import basic_auth
from lightci.config import Settings, settings
from lightci.errors import UserError
from lightci.logs import BuildLog, hide_credentials
from lightci.models import FAILED, SUCCESS, Build, Bump, iso
from lightci.secretfile import read_secrets

PUSH_TRIES = 5  # a rejected push fetches and tries again this many times in all
ROLLBACK = "rollback"
_FIELD = re.compile(r"\{\{|\}\}|\{(\w+)(?::([^{}]*))?\}")  # {{ and }}: a brace, as load reads them
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


def ship(cfg: Settings, job: jobs.Job, build: Build, dirs, out: BuildLog, watched: Any):
    """After the stages: [[images]] in order, then the [gitops] bump. Returns (status, fields)."""
    if job.images:
        status, fields = images.build_all(cfg, job, build, dirs.workspace, out, watched)
        if status != SUCCESS:
            return status, fields
    if job.gitops and not watched.kill_reason:
        Build.update(stage="gitops").where(Build.id == build.id).execute()
        build = Build.get_by_id(build.id)
        try:
            bump(cfg, job, build, out)
        except UserError as exc:
            return FAILED, {"error": f"gitops bump failed: {exc}", "stage": "gitops"}
    if watched.kill_reason:
        return watched.kill_status, {"error": watched.kill_reason}
    return SUCCESS, {}


# -- what a bump writes ---------------------------------------------------------


def render(template: str, values: dict[str, str], tags: dict[str, str], refs: dict[str, str]):
    """{sha8}, {number}, ...; {tag:core} the core image's tag, {image:core} its repository:tag."""

    def one(match: re.Match) -> str:
        name, arg = match.group(1), match.group(2)
        if name is None:
            return match.group(0)[0]
        if name in ("tag", "image"):
            chosen = tags if name == "tag" else refs
            if arg not in chosen:
                raise UserError(f"{{{name}:{arg}}}: this build pushed no {arg!r} image")
            return chosen[arg]
        return values[name]

    return _FIELD.sub(one, template)


def wanted(job: jobs.Job, build: Build) -> tuple[dict[str, str], str]:
    """The values [gitops] set asks for, and the commit message, for this build."""
    rows = [i for i in images.for_build(build.id) if i.state != "failed"]
    tags = {i.component: i.tag for i in rows}
    refs = {i.component: i.ref for i in rows}
    values = {
        "sha8": build.commit[:8] if build.commit else f"build{build.id}",
        "branch": build.branch,
        "number": str(build.number),
        "job": job.name,
        "commit": build.commit,
        "components": ", ".join(tags) or "no images",
    }
    sets = {path: render(t, values, tags, refs) for path, t in job.gitops["set"].items()}
    return sets, render(job.gitops["message"], values, tags, refs)


def bump(cfg: Settings, job: jobs.Job, build: Build, out: BuildLog) -> Bump:
    sets, message = wanted(job, build)
    return apply(cfg, job, sets, message, "bump", build, out)


# -- the deployment repository -------------------------------------------------------


def mirror(cfg: Settings, job: jobs.Job) -> Path:
    return cfg.mirrors_dir / "gitops" / job.name


def auth_env(cfg: Settings, spec: dict[str, Any]) -> dict[str, str]:
    """[gitops] token: an Authorization header through git's environment, never its argv."""
    if not spec.get("token"):
        return {}
    secrets = read_secrets(cfg.secrets_file)
    if spec["token"] not in secrets:
        raise UserError(f"[gitops] token names {spec['token']!r}, which is not in secrets.env")
    return basic_auth("lightci", secrets[spec["token"]])


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    """git without a shell, a prompt or the caller's GIT_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**base, **GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        errors="replace",
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        problem = (result.stderr or result.stdout).strip().splitlines()
        last = hide_credentials(problem[-1]) if problem else result.returncode
        raise UserError(f"git {args[0]} failed: {last}")
    return result


def _sync(work: Path, repo: str, branch: str, out: BuildLog, env: dict[str, str]) -> None:
    """The work tree at origin/<branch>, fetched now; cloned the first time."""
    if not (work / ".git").is_dir():
        work.parent.mkdir(parents=True, exist_ok=True)
        out.note(f"cloning {hide_credentials(repo)} into {work}")
        _git(work.parent, "clone", "--quiet", "--no-checkout", "--", repo, work.name, env=env)
    else:
        _git(work, "remote", "set-url", "origin", repo)
    refspec = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
    _git(work, "fetch", "--quiet", "origin", refspec, env=env)
    _git(work, "checkout", "--quiet", "--force", "-B", branch, f"refs/remotes/origin/{branch}")
    _git(work, "clean", "-fdxq")


def apply(
    cfg: Settings,
    job: jobs.Job,
    sets: dict[str, str],
    message: str,
    kind: str,
    build: Build,
    out: BuildLog,
    of: int | None = None,
    remove: list[str] = (),
    expect: dict[str, str] | None = None,
) -> Bump:
    """Set the values, commit, push (never forced); a rejected push tries again on top."""
    spec = job.gitops
    work = mirror(cfg, job)
    name, email = spec["author"][:-1].split(" <", 1)
    who = {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
    row = {"job": job.name, "build_id": build.id, "build_number": build.number, "kind": kind}
    row |= {
        "repo": hide_credentials(spec["repo"]),
        "branch": spec["branch"],
        "file": spec["file"],
        "of": of,
    }
    row["after"] = json.dumps(sets)
    work.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{work}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds of this job on two keys take turns here
        try:
            change = (sets, remove, expect)
            return _apply(work, spec, change, message, who | auth_env(cfg, spec), row, out)
        except UserError as exc:  # a failed bump is history too (and a failed deploy)
            Bump.create(**row, state="failed", error=str(exc), created_at=time.time())
            raise


def _apply(work: Path, spec, change, message, env, row, out: BuildLog) -> Bump:
    """change: (paths to set, paths to take out, what they must hold now: a rollback leaves
    a path that another job or a person changed since the bump as it is)."""
    from lightci.values import differing, edit  # ruamel.yaml: 1.6 MB that only a bump needs

    sets, remove, expect = change

    problem = ""
    for attempt in range(1, PUSH_TRIES + 1):
        _sync(work, spec["repo"], spec["branch"], out, env)
        target = work / spec["file"]
        if not target.is_file():
            repo = hide_credentials(spec["repo"])
            problem = f"no {spec['file']} on branch {spec['branch']} of {repo}"
            break
        original = target.read_text()
        moved = differing(original, expect) if expect else []
        if moved:
            out.note(f"gitops: changed since the bump, left as they are: {', '.join(moved)}")
        kept = {p: v for p, v in sets.items() if p not in moved}
        changed, before = edit(original, kept, [p for p in remove if p not in moved])
        row["before"] = json.dumps(before)
        if changed == original:
            out.note(f"gitops: {spec['file']} already has these values: no commit")
            return Bump.create(**row, state="unchanged", created_at=time.time())
        target.write_text(changed)
        _git(work, "add", "--", spec["file"])
        _git(work, "commit", "--quiet", "--no-verify", "-m", message, env=env)
        pushed = _git(
            work,
            "push",
            "--quiet",
            "origin",
            f"HEAD:refs/heads/{spec['branch']}",
            env=env,
            check=False,
        )
        if pushed.returncode == 0:
            commit = _git(work, "rev-parse", "HEAD").stdout.strip()
            changes = ", ".join(f"{p} = {v}" for p, v in kept.items()) or "paths taken out"
            out.note(f"gitops: pushed {commit[:12]} to {spec['branch']}: {changes}")
            return Bump.create(**row, state="pushed", commit=commit, created_at=time.time())
        lines = (pushed.stderr or pushed.stdout).strip().splitlines()
        why = [ln for ln in lines if ln.lstrip().startswith(("!", "error:", "fatal:"))]
        said = why or [ln for ln in lines if not ln.startswith("hint:")] or lines  # not advice
        last = hide_credentials(said[0].strip()) if said else pushed.returncode
        problem = f"push rejected: {last}"
        out.note(f"gitops: {problem} (try {attempt} of {PUSH_TRIES}); fetching and applying again")
    raise UserError(problem)


# -- rollback and history -----------------------------------------------------------------


def last_bump(job_name: str) -> Bump | None:
    """The newest pushed bump (or re-apply) of the job that no rollback has reverted yet."""
    rows = list(
        Bump.select()
        .where(Bump.job == job_name, Bump.state.in_(("pushed", "unchanged")))
        .order_by(Bump.id.desc())
    )
    # A rollback that found the file as the bump found it (someone reverted by hand) undid
    # that bump too: the next rollback goes on to the one before, not to it again.
    undone = {r.of for r in rows if r.kind == ROLLBACK}
    return next(
        (r for r in rows if r.kind != ROLLBACK and r.state == "pushed" and r.id not in undone),
        None,
    )


def has_gitops(job_name: str) -> bool:
    return bool(jobs.load(settings(), job_name).gitops)


def made_by(build_id: int) -> Bump | None:
    return Bump.select().where(Bump.build_id == build_id).order_by(Bump.id.desc()).first()


def request_rollback(job_name: str, to: int | None = None, trigger: str = "cli") -> Build:
    """Queue the rollback: a build of the job that reverts its last bump (or re-applies `to`)."""
    job = jobs.load(settings(), job_name)
    if not job.gitops:
        raise UserError(f"job {job_name!r} has no [gitops]")
    if to is None:
        bump = last_bump(job_name)
        if bump is None:
            raise UserError(f"job {job_name!r} has no bump to roll back", status=409)
    else:
        if not isinstance(to, int) or isinstance(to, bool):
            raise UserError('"to" must be the id of a bump (a number)')
        bump = _bump_of(job_name, to)
    # Under the key of the build that made the bump: after that key's running build, which
    # would otherwise push its bump on top of the rollback a moment later.
    made = Build.get_or_none(Build.id == bump.build_id)
    inputs = {"branch": made.branch, "params": made.param_dict} if made else {}
    inputs |= {"origin": {"tag": made.tag}} if made and made.tag else {}
    return builds.trigger(job_name, trigger=f"{ROLLBACK}:{to}" if to else ROLLBACK, **inputs)


def _bump_of(job_name: str, bump_id: int) -> Bump:
    found = Bump.get_or_none(Bump.id == bump_id, Bump.job == job_name, Bump.state == "pushed")
    if found is None:
        raise UserError(f"job {job_name!r} has no pushed bump {bump_id}", status=404)
    return found


def wait(build_id: int, poll: float = 0.25) -> Build:
    """The build once final (the CLI's rollback waits for its rollback build)."""
    while True:
        build = builds.get(build_id)
        if build.is_final:
            return build
        time.sleep(poll)


def rollback_action(build: Build, depth: int = 0) -> str:
    """The rollback a build performs ("rollback" or "rollback:<id>"); "" for an ordinary build.

    A retry of a rollback build (trigger "retry of #N") is that rollback again.
    """
    if build.trigger == ROLLBACK or build.trigger.startswith(f"{ROLLBACK}:"):
        return build.trigger
    if build.retry_of and depth < 20:
        original = Build.get_or_none(Build.id == build.retry_of)
        return rollback_action(original, depth + 1) if original else ""
    return ""


def is_rollback(build: Build) -> bool:
    return rollback_action(build) != ""


def run_rollback(cfg: Settings, job: jobs.Job, build: Build, out: BuildLog):
    """The rollback build's one step; returns (status, fields)."""
    Build.update(stage="rollback").where(Build.id == build.id).execute()
    try:
        if not job.gitops:
            raise UserError(f"job {job.name!r} has no [gitops] any more")
        _, _, to = rollback_action(build).partition(":")
        remove: list[str] = []
        if to:
            target = _bump_of(job.name, int(to))
            sets, kind = json.loads(target.after), "reapply"
            message = (
                f"{job.name}: re-apply bump {target.id} ({target.commit[:8]}) [{build.label()}]"
            )
        else:
            target = last_bump(job.name)
            if target is None:
                raise UserError(f"job {job.name!r} has no bump to roll back")
            # What it replaced goes back (None: null); a path it added (not in before) goes.
            before, after = json.loads(target.before), json.loads(target.after)
            sets = {path: before[path] for path in after if path in before}
            remove = [path for path in after if path not in before]
            kind = ROLLBACK
            message = f"{job.name}: revert bump {target.id} ({target.commit[:8]}) [{build.label()}]"
        gone = f"; taken out: {', '.join(remove)}" if remove else ""
        out.note(f"{kind} of bump {target.id} ({target.commit[:12]}): {sets}{gone}")
        expect = json.loads(target.after) if kind == ROLLBACK else None
        apply(cfg, job, sets, message, kind, build, out, target.id, remove, expect)
    except UserError as exc:
        return FAILED, {"error": f"rollback failed: {exc}", "stage": "rollback"}
    return SUCCESS, {"exit_code": 0}


def history(job_name: str | None = None, limit: int = 100) -> list[Bump]:
    query = Bump.select().order_by(Bump.id.desc()).limit(max(1, min(limit, 1000)))
    if job_name:
        query = query.where(Bump.job == job_name)
    return list(query)


def as_dict(row: Bump) -> dict[str, Any]:
    return {
        "id": row.id,
        "job": row.job,
        "build_id": row.build_id,
        "build_number": row.build_number,
        "kind": row.kind,
        "state": row.state,
        "repo": row.repo,
        "branch": row.branch,
        "file": row.file,
        "commit": row.commit,
        "before": json.loads(row.before),
        "values": json.loads(row.after),
        "of": row.of,
        "error": row.error,
        "created_at": iso(row.created_at),
    }
