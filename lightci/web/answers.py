"""JSON answers, request bodies and query arguments: what every handler shares."""

from __future__ import annotations

import json
from typing import Any

from bottle import HTTPResponse, request

from lightci.config import settings
from lightci.errors import UserError


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


def body_json() -> dict:
    body = raw_body(settings()["server"]["max_body"])
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise UserError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise UserError("the body must be a JSON object")
    return data


def int_arg(name: str, default: int | None) -> int | None:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if abs(value) >= 2**63:
        raise UserError(f"{name} is out of range")
    return value


def log_start(size: int) -> int:
    """?offset=N from the start, ?offset=-N for the last N bytes."""
    offset = int_arg("offset", 0)
    if offset < 0:
        return max(0, size + offset)
    return min(offset, size)
