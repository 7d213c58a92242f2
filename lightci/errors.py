"""The one error type of the domain, the message of a key nobody knows, and untrusted JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any


class UserError(Exception):
    """Something a user can fix: bad input, a broken job.toml, an unknown build.

    The edges turn it into an HTTP answer (``status``, and a Retry-After header
    when ``retry_after`` is set) or a CLI exit code 2, with ``str(error)`` as
    the message.
    """

    def __init__(self, message: str, status: int = 400, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def unknown_key(key: str, known: Iterable[str]) -> str:
    """The message for a key nobody knows: the known key closest to it, or all of them."""
    import difflib  # only a mistake needs it, and a resting process does without

    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    return f"unknown key ({hint})"


def json_object(text: bytes | str, what: str = "the body") -> dict[str, Any]:
    """Untrusted JSON text as a dict, else UserError: text that is not JSON, not an object,
    or numbers JSON has not (NaN, Infinity, 1e400), which Python's json would let in."""
    try:
        data = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise UserError(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} must be a JSON object")
    return data


def _not_a_number(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value
