"""GET /api/builds/<id>/events: a build's log and state changes as Server-Sent Events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bottle
from bottle import response

from lightci import builds, overview, workspace
from lightci.config import settings
from lightci.models import Build
from lightci.web.answers import json_answer, log_start
from lightci.web.auth import header, require_read

SSE_PING = 15.0  # seconds between keep-alive comments on an idle event stream
SSE_POLL = 0.2  # seconds between looks at a growing log
SSE_STATE_POLL = 0.5  # seconds between looks at the build row
SSE_CHUNK = 256 * 1024  # bytes of log per event at most
SPARE_THREADS = 8  # waitress threads no event stream may hold (at most half of them)


def _sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _state(build: Build) -> dict[str, Any]:
    """The build as GET /api/builds/<id> shows it: a queued one's waiting_for and ETAs too."""
    return overview.detail(build)


def api_events(build_id: str):
    """Log lines and state changes as Server-Sent Events; ends when the build is final.

    Each log event carries whole lines as JSON ({"offset", "text"}, so a \\r in
    a progress bar cannot break the stream) and its id is the byte offset
    after it: a reconnecting EventSource resumes where it stopped.
    """
    require_read()
    build = builds.get(build_id)
    path = workspace.log_path(settings(), build)
    offset = _resume_offset()
    if offset is None:
        offset = log_start(path.stat().st_size if path.exists() else 0)
    threads = settings()["server"]["threads"]
    if not _streams.take(max(1, threads - min(SPARE_THREADS, threads // 2))):
        return json_answer(
            503,
            {"error": f"too many live logs open: raise [server] threads ({threads})"},
            headers={"Retry-After": "5"},
        )
    response.content_type = "text/event-stream; charset=utf-8"
    response.set_header("Cache-Control", "no-store")
    response.set_header("X-Accel-Buffering", "no")
    return _stream(build, path, offset)


def _resume_offset() -> int | None:
    """The byte offset a reconnecting EventSource sends back; None for anything else
    ("²" is a digit to Python, 5000 digits overflow int(), past 2**63 overflows seek)."""
    resume = header("Last-Event-ID") or ""
    if resume.isascii() and resume.isdigit() and len(resume) <= 19 and int(resume) < 2**63:
        return int(resume)
    return None


class _Streams:
    """Open event streams. Each holds a waitress thread until its build ends, so
    some threads are never theirs: webhooks and pages must still answer fast."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open = 0

    def take(self, limit: int) -> bool:
        with self.lock:
            if self.open >= limit:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self.lock:
            self.open -= 1


_streams = _Streams()


def _stream(build: Build, path: Path, offset: int) -> Iterator[bytes]:
    """The stream's body; it holds one of _streams' places until it ends."""
    f = None
    try:
        yield b"retry: 2000\n\n" + _sse("state", _state(build))
        seen = (build.status, build.stage)
        last_sent = last_state = time.monotonic()
        while True:
            final = build.is_final
            if f is None and path.exists():
                f = open(path, "rb")
            data = b""
            if f is not None:
                f.seek(offset)
                data = f.read(SSE_CHUNK)
                if not final and len(data) < SSE_CHUNK:
                    data = data[: data.rfind(b"\n") + 1]  # whole lines while it grows
            if data:
                offset += len(data)
                text = data.decode("utf-8", "replace")
                yield _sse("log", {"offset": offset, "text": text}, offset)
                last_sent = time.monotonic()
                if len(data) == SSE_CHUNK:
                    continue
            elif final:
                yield _sse("end", {"status": build.status})
                return
            now = time.monotonic()
            if now - last_state >= SSE_STATE_POLL:
                last_state = now
                fresh = Build.get_or_none(Build.id == build.id)
                if fresh is None:  # removed by a cleanup while someone watched
                    yield _sse("end", {"status": build.status, "error": "build removed"})
                    return
                build = fresh
                if (build.status, build.stage) != seen:
                    seen = (build.status, build.stage)
                    yield _sse("state", _state(build))
                    last_sent = now
                    continue  # a final state: drain the log's rest at once
            if now - last_sent >= SSE_PING:
                yield b": ping\n\n"
                last_sent = now
            time.sleep(SSE_POLL)
    finally:
        _streams.give_back()
        if f is not None:
            f.close()


def install(app: bottle.Bottle) -> None:
    app.route("/api/builds/<build_id>/events", "GET", api_events)
