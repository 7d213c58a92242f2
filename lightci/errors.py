"""The one error type of the domain, and the message of a key nobody knows."""

from __future__ import annotations

from collections.abc import Iterable


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
