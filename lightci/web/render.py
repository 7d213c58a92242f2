"""Templates (views/) and the formatting they use; templates receive data, never query."""

from __future__ import annotations

import sys
import time
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bottle
from bottle import request, response

from lightci import __version__, models
from lightci.config import settings
from lightci.web import auth

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'"
)


@cache
def views() -> Path:
    """The source tree's views/, else the installed copy (setup.cfg data_files)."""
    package_parent = Path(__file__).resolve().parent.parent.parent
    for candidate in (
        package_parent / "views",
        Path(sys.prefix) / "share" / "lightci" / "views",
        package_parent / "share" / "lightci" / "views",  # zipapp (shiv)
    ):
        if (candidate / "base.tpl").exists():
            return candidate
    return package_parent / "views"


def ago(ts: float | None) -> str:
    if not ts:
        return ""
    return span(time.time() - ts) + " ago"


def span(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def stamp(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""


def page_vars(**kwargs) -> dict[str, Any]:
    return {
        "ago": ago,
        "span": span,
        "stamp": stamp,
        "iso": models.iso,
        "quote": quote,
        "version": __version__,
        "final_states": " ".join(models.FINAL),
        "token_set": bool(settings().token),
        "logged_in": auth.logged_in(),
        "can_write": auth.can_write(),
        "path": request.path,
        "csrf": "",
        "error": "",
        **kwargs,
    }


@cache
def _lookup() -> list[str]:
    """One list for the process: Bottle caches compiled templates by the lookup's id."""
    return [str(views())]


def template(name: str, **kwargs) -> str:
    return bottle.template(name, template_lookup=_lookup(), **kwargs)


def page(name: str, **kwargs) -> str:
    response.set_header("Cache-Control", "no-store")
    response.set_header("X-Frame-Options", "DENY")
    response.set_header("Content-Security-Policy", CSP)
    return template(name, **page_vars(csrf=auth.csrf_cookie(), **kwargs))
