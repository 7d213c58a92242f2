"""Images at the engine: building one from a workspace, pushing one to a registry.

The one way [[images]] and [deploy] build and push. Both read the engine's
streaming answer into the build's log, and both stop when the runner's watchdog
names a reason (a cancel, a timeout): the answer's socket is shut, and the
engine ends a build or a push whose client went away. A silent RUN step or a
long push would otherwise hold the build until it finished.

Credentials are [registry] user and password in lightci.toml (the password the
name of a secret in secrets.env); they go to the engine, never to the log.
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

from lightci.config import Settings
from lightci.container import POLL, client
from lightci.errors import UserError
from lightci.logs import BuildLog
from lightci.secretfile import read_secrets


def build_image(
    context, dockerfile: str, tag: str, labels: dict, out: BuildLog, watched: Any, failed: str
) -> str:
    """docker build, its output into the log; the image id ("" when the watchdog stopped it).

    An error of the build raises UserError("<failed>: <the engine's words>").
    """
    image_id = ""
    events = client().api.build(
        path=str(context),
        dockerfile=dockerfile,
        tag=tag,
        rm=True,
        forcerm=True,
        decode=True,
        labels=labels,
    )
    for event in _until_stopped(events, watched):
        if "error" in event:
            raise UserError(f"{failed}: {' '.join(event['error'].split())}")
        if "stream" in event:
            out.write(event["stream"])
        image_id = event.get("aux", {}).get("ID", image_id)
    if watched.kill_reason:
        return ""
    return image_id or client().images.get(tag).id


def credentials(cfg: Settings) -> dict[str, str] | None:
    """[registry] user and password (the name of a secret in secrets.env), for pushes."""
    section = cfg.values.get("registry", {})
    if not section.get("user"):
        return None
    name = section.get("password", "")
    secrets = read_secrets(cfg.secrets_file)
    if name not in secrets:
        raise UserError(f"[registry] password names {name!r}, which is not in {cfg.secrets_file}")
    return {"username": section["user"], "password": secrets[name]}


def push(cfg: Settings, repository: str, tag: str, out: BuildLog, watched: Any) -> str:
    """Push repository:tag (tagged already); the registry's digest of the manifest ("" when
    the watchdog stopped it)."""
    out.note(f"==> push {repository}:{tag}")
    digest = ""
    auth = credentials(cfg)
    events = client().api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth)
    for event in _until_stopped(events, watched):
        if "error" in event:
            raise UserError(f"push to {repository} failed: {' '.join(event['error'].split())}")
        if event.get("status") and not event.get("progressDetail"):
            out.write(f"{event.get('id', '')} {event['status']}\n".lstrip())
        digest = event.get("aux", {}).get("Digest", digest)
    if watched.kill_reason:
        return ""
    if not digest:
        raise UserError(f"push to {repository} failed: the registry sent no digest")
    out.note(f"<== pushed {repository}:{tag} {digest}")
    return digest


def _until_stopped(events, watched: Any):
    """The engine's events until they end, or until the watchdog names a reason: then the
    answer's socket is shut (the SDK's generator keeps its response as a local)."""
    transport = sys.modules["urllib3"].exceptions.HTTPError  # docker's own, loaded with it

    frame = getattr(events, "gi_frame", None)
    response = frame.f_locals.get("response") if frame is not None else None
    done = threading.Event()

    def watch() -> None:
        while not done.wait(POLL):
            if watched.kill_reason:
                try:
                    response.raw.connection.sock.shutdown(socket.SHUT_RDWR)
                except (AttributeError, OSError):  # ended meanwhile
                    pass
                return

    threading.Thread(target=watch, name="lightci-engine-stop", daemon=True).start()
    try:
        yield from events
    except (OSError, transport):
        if not watched.kill_reason:
            raise
    finally:
        done.set()
