"""A job proposed from a repository's files (SPEC section 9)."""

from __future__ import annotations

from typing import Any

from lightci.config import Settings
from lightci.errors import UserError


def propose(cfg: Settings, repo: Any, branch: Any) -> dict[str, Any]:
    raise UserError("detection is not ready")
