"""JSON answers, request bodies and query arguments: what every handler shares."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from bottle import HTTPResponse, request

from lightci.config import settings
from lightci.errors import UserError, json_object


def json_answer(status: int, data: Any, headers: dict[str, str] | None = None) -> HTTPResponse:
    base = {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"}
    return HTTPResponse(json.dumps(data), status=status, headers={**base, **(headers or {})})


def wants_json() -> bool:
    path = request.path
    return path.startswith(("/api/", "/hooks/")) or path in ("/health", "/metrics")


def raw_body(limit: int) -> bytes:
    """The body, refused with 413 past the cap before it is read into memory."""
    if request.content_length > limit:
        raise UserError(f"body of {request.content_length} bytes is over the {limit} cap", 413)
    body = request.body.read(limit + 1)
    if len(body) > limit:
        raise UserError(f"body is over the {limit} byte cap ([server] max_body)", 413)
    return body


def body_json(allowed: Iterable[str] = ()) -> dict:
    """The body's JSON object ({} for none); `allowed`: its only fields (a typo is a 400,
    not a default: "dryrun" must not clean up for real)."""
    body = raw_body(settings()["server"]["max_body"])
    data = json_object(body) if body.strip() else {}
    unknown = sorted(set(data) - set(allowed)) if allowed else []
    if unknown:
        names = ", ".join(repr(n[:40]) for n in unknown[:5])
        raise UserError(f"unknown field(s) {names}: use {', '.join(allowed)}")
    return data


WHOLE = re.compile(r"-?[0-9]{1,19}")  # ASCII digits: int() would take "1_0", " 1", "١"


def text_arg(name: str) -> str | None:
    """A query argument as text, None when absent or empty; bytes not UTF-8 are a 400."""
    return _utf8(name, request.query.get(name, "")) or None


def form_text(name: str, default: str = "") -> str:
    """A form field as text (bottle's getunicode would make bad bytes an empty value)."""
    return _utf8(name, request.forms.get(name, default))


def _utf8(name: str, raw: str) -> str:
    try:
        return raw.encode("latin-1").decode("utf-8")  # WSGI's latin-1 view of the bytes
    except UnicodeError:
        raise UserError(f"{name} is not valid UTF-8 text") from None


def int_arg(name: str, default: int | None, least: int | None = None) -> int | None:
    """?name=N, whole and written in ASCII digits; `least`: the smallest it may be."""
    text = text_arg(name)
    if text is None:
        return default
    if not WHOLE.fullmatch(text) or abs(int(text)) >= 2**63:
        raise UserError(f"{name} must be a whole number, got {text[:40]!r}")
    if least is not None and int(text) < least:
        raise UserError(f"{name} must be {least} or more, got {text}")
    return int(text)


def limit_arg(default: int = 50, most: int = 500) -> int:
    """?limit=N of a listing: 1 or more; more than `most` is taken as `most`."""
    return min(int_arg("limit", default, least=1), most)


def log_start(size: int) -> int:
    """?offset=N from the start, ?offset=-N for the last N bytes."""
    offset = int_arg("offset", 0)
    if offset < 0:
        return max(0, size + offset)
    return min(offset, size)
