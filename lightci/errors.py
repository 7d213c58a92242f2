"""The one error type of the domain."""

from __future__ import annotations


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
