"""A build's artifacts: the list (JSON) and each file, as an attachment."""

from __future__ import annotations

import bottle

from lightci import artifacts, builds
from lightci.config import settings
from lightci.web import auth
from lightci.web.answers import json_answer


def api_artifacts(build_id: str):
    auth.require_read()
    return json_answer(200, artifacts.listing(settings(), builds.get(build_id)))


def download(build_id: str, rel: str):
    auth.html_read()
    root, name = artifacts.path_of(settings(), builds.get(build_id), rel)
    return bottle.static_file(name, root=str(root), download=name.rsplit("/", 1)[-1])


def install(app: bottle.Bottle) -> None:
    app.route("/api/builds/<build_id>/artifacts", "GET", api_artifacts)
    app.route("/builds/<build_id>/artifacts/<rel:path>", "GET", download)
