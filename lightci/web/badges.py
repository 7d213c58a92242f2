"""GET /badge/<job>.svg[?branch=B]: the last final state of a job, for a README."""

from __future__ import annotations

from html import escape

import bottle
from bottle import request

from lightci import jobs, overview
from lightci.config import settings
from lightci.models import FAILED, SUCCESS
from lightci.web import auth

COLORS = {SUCCESS: "#2e9e4a", FAILED: "#cf3a3a"}
OTHER = "#9a9a9a"
SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" \
role="img" aria-label="{label}: {state}"><title>{label}: {state}</title>
<rect width="{left}" height="20" fill="#555"/>\
<rect x="{left}" width="{right}" height="20" fill="{color}"/>
<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">\
<text x="6" y="14">{label}</text><text x="{text_x}" y="14">{state}</text></g></svg>
"""


def badge(name: str):
    auth.require_read()
    jobs.load(settings(), name)  # an unknown job is a 404
    branch = request.query.getunicode("branch") or None
    last = overview.last_final(name, branch)
    state = last.status if last is not None else "unknown"
    label = escape(name[:40])
    left, right = 12 + 7 * len(label), 12 + 7 * len(state)
    svg = SVG.format(
        width=left + right,
        left=left,
        right=right,
        text_x=left + 6,
        label=label,
        state=state,
        color=COLORS.get(state, OTHER),
    )
    headers = {"Content-Type": "image/svg+xml", "Cache-Control": "no-cache, max-age=0"}
    if not settings()["server"]["public"]:
        headers["Cache-Control"] = "private, no-cache"
    return bottle.HTTPResponse(svg, headers=headers)


def install(app: bottle.Bottle) -> None:
    app.route("/badge/<name>.svg", "GET", badge)
