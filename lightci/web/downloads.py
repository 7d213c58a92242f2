"""A build's artifacts: the list (JSON) and each file, as an attachment."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from email.utils import formatdate
from urllib.parse import quote

import bottle
from bottle import request

from lightci import artifacts, builds
from lightci.config import settings
from lightci.web import auth
from lightci.web.answers import json_answer

PACKED = {"bzip2": "x-bzip2", "xz": "x-xz", "br": "x-brotli"}


def api_artifacts(build_id: str):
    auth.require_read()
    return json_answer(200, artifacts.listing(settings(), builds.get(build_id)))


def download(build_id: str, rel: str):
    """The file opened once, without following a symlink, and sent from that open file: a
    running build cannot swap in a link between a check and the open."""
    auth.html_read()
    f = artifacts.open_artifact(settings(), builds.get(build_id), rel)
    name = rel.rsplit("/", 1)[-1]
    kind, packed = mimetypes.guess_type(name)
    if packed:  # app.tar.gz is a gzip file to keep, not a tar the browser should unpack
        kind = f"application/{PACKED.get(packed, packed)}"
    seen = os.fstat(f.fileno())
    headers = {
        "Content-Type": kind or "application/octet-stream",
        "Content-Length": str(seen.st_size),
        "Content-Disposition": disposition(name),
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "bytes",
        "Last-Modified": formatdate(seen.st_mtime, usegmt=True),
    }
    asked = request.environ.get("HTTP_RANGE")
    if not asked:
        return bottle.HTTPResponse(f, **headers)
    ranges = list(bottle.parse_range_header(asked, seen.st_size))
    if not ranges:  # past the end, or no range it can read
        f.close()
        return bottle.HTTPResponse(status=416, **{"Content-Range": f"bytes */{seen.st_size}"})
    start, end = ranges[0]  # several ranges: the first (a resumed download asks for one)
    headers.update({"Content-Length": str(end - start)})
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{seen.st_size}"
    return bottle.HTTPResponse(_part(f, start, end - start), status=206, **headers)


def _part(f, start: int, length: int) -> Iterator[bytes]:
    with f:
        f.seek(start)
        while length > 0 and (chunk := f.read(min(length, artifacts.CHUNK))):
            length -= len(chunk)
            yield chunk


def disposition(name: str) -> str:
    """An attachment's header: an ASCII fallback, and the real name as RFC 6266's filename*."""
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def install(app: bottle.Bottle) -> None:
    app.route("/api/builds/<build_id>/artifacts", "GET", api_artifacts)
    app.route("/builds/<build_id>/artifacts/<rel:path>", "GET", download)
