"""Pushing an image to a registry: the one way [[images]] and [deploy] push do it.

Credentials are [registry] user and password in lightci.toml (the password the
name of a secret in secrets.env); they go to the engine, never to the log.
"""

from __future__ import annotations

from lightci.config import Settings
from lightci.container import client
from lightci.errors import UserError
from lightci.logs import BuildLog
from lightci.secretfile import read_secrets


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


def push(cfg: Settings, repository: str, tag: str, out: BuildLog) -> str:
    """Push repository:tag (tagged already); returns the registry's digest of the manifest."""
    out.note(f"==> push {repository}:{tag}")
    digest = ""
    auth = credentials(cfg)
    for event in client().api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
        if "error" in event:
            raise UserError(f"push to {repository} failed: {' '.join(event['error'].split())}")
        if event.get("status") and not event.get("progressDetail"):
            out.write(f"{event.get('id', '')} {event['status']}\n".lstrip())
        digest = event.get("aux", {}).get("Digest", digest)
    if not digest:
        raise UserError(f"push to {repository} failed: the registry sent no digest")
    out.note(f"<== pushed {repository}:{tag} {digest}")
    return digest
