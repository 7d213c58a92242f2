"""lightci: a lightweight, self-hosted CI/CD server for one small VPS."""

__version__ = "0.1.0"


class UserError(Exception):
    """Something a user can fix: bad input, a broken job.toml, an unknown build.

    The one error type of the domain. The edges turn it into an HTTP answer
    (``status``) or a CLI exit code 2, with ``str(error)`` as the message.
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
