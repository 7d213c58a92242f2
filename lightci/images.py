"""A build's component images ([[images]]): built in order after the stages, pushed, recorded.

Each image is built from its own Dockerfile and context in the workspace,
tagged from its template, pushed to its repository and written as an Image
row with its digest. The first failure ends the build and names the
component; the images pushed before it stay listed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightci import jobs, registry, release
from lightci.config import Settings
from lightci.container import engine_error, engine_failures
from lightci.errors import UserError
from lightci.logs import BuildLog
from lightci.models import Build, Image


def tag_for(image: dict[str, Any], job: jobs.Job, build: Build) -> str:
    values = {
        "component": image["component"],
        "sha8": build.commit[:8] if build.commit else f"build{build.id}",
        "branch": build.branch or "detached",
        "number": str(build.number),
        "job": job.name,
        "commit": build.commit or f"build{build.id}",
    }
    return release.tag_value(image["tag"].format_map(values))


def build_all(cfg: Settings, job: jobs.Job, build: Build, workspace: Path, out: BuildLog, watched):
    """Every [[images]] entry in order; returns (status, fields) like a stage."""
    build = Build.get_by_id(build.id)  # the commit the checkout found
    Build.update(stage="images").where(Build.id == build.id).execute()
    planned = [  # each image's repository and tag, worked out once
        (image, image["push"] or f"lightci/{job.name.lower()}", tag_for(image, job, build))
        for image in job.images
    ]
    refs: dict[str, str] = {}
    for image, repository, tag in planned:  # one reference twice: the second would replace
        ref = f"{repository}:{tag}"
        if ref in refs:
            error = f"components {refs[ref]} and {image['component']} both make {ref}"
            return "failed", {"error": f"{error}: give their tags {{component}}", "stage": "images"}
        refs[ref] = image["component"]
    for image, repository, tag in planned:
        if watched.kill_reason:
            return watched.kill_status, {"error": watched.kill_reason}
        component = image["component"]
        try:
            image_id = _build(image, workspace, f"{repository}:{tag}", out, watched)
            if watched.kill_reason:
                return watched.kill_status, {"error": watched.kill_reason}
            digest = registry.push(cfg, repository, tag, out, watched) if image["push"] else ""
            if watched.kill_reason:  # stopped in the push
                return watched.kill_status, {"error": watched.kill_reason}
        except (UserError, *engine_failures()) as exc:
            problem = str(exc) if isinstance(exc, UserError) else engine_error(exc)
            _record(job, build, component, repository, tag, "failed", error=problem)
            return "failed", {"error": f"image {component} failed: {problem}", "stage": "images"}
        state = "pushed" if image["push"] else "built"
        _record(job, build, component, repository, tag, state, digest=digest or image_id)
    return "success", {}


def _record(job, build, component, repository, tag, state, digest="", error="") -> None:
    Image.create(
        build_id=build.id,
        job=job.name,
        component=component,
        ref=f"{repository}:{tag}",
        tag=tag,
        digest=digest,
        state=state,
        error=error,
        created_at=time.time(),
    )


def _build(image: dict[str, Any], workspace: Path, ref: str, out: BuildLog, watched) -> str:
    context = _inside(workspace, image["context"], "context")
    dockerfile = _inside(workspace, image["dockerfile"], "dockerfile")
    if not dockerfile.is_file():
        raise UserError(f"no {image['dockerfile']} in the workspace")
    if not context.is_dir():
        raise UserError(f"no directory {image['context']} in the workspace")
    out.note(f"==> image {image['component']}: {ref} from {image['dockerfile']}")
    started = time.time()
    labels = {"lightci.component": image["component"]}
    image_id = registry.build_image(context, str(dockerfile), ref, labels, out, watched, "build")
    if not image_id:
        return ""
    out.note(f"<== image {image['component']} ({image_id[7:19]}) in {time.time() - started:.2f} s")
    return image_id


def _inside(workspace: Path, rel: str, what: str) -> Path:
    """workspace/rel with its symlinks resolved, which must stay in the workspace: the
    engine is sent what the host's user can read, and a commit can plant a symlink."""
    real = (workspace / rel).resolve()
    if not real.is_relative_to(workspace.resolve()):
        raise UserError(f"[[images]] {what} {rel!r} leads out of the workspace (a symlink?)")
    return real


def for_build(build_id: int) -> list[Image]:
    return list(Image.select().where(Image.build_id == build_id).order_by(Image.id))


def as_dict(image: Image) -> dict[str, Any]:
    return {
        "component": image.component,
        "ref": image.ref,
        "tag": image.tag,
        "digest": image.digest,
        "state": image.state,
        "error": image.error,
    }
