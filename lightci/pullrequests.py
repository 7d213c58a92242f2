"""Pull and merge requests as the forges send them: which events build, and what.

GitHub, Gitea and Forgejo share one shape (``pull_request`` with ``head`` and
``base``); GitLab's Merge Request Hook has its own (``object_attributes``).
Opening, reopening and new commits build the head commit; closing, labelling
and editing build nothing. A PR whose head lives in another repository is a
fork's, and its builds get no secrets unless the job says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightci.errors import UserError

GITHUB_ACTIONS = ("opened", "synchronize", "reopened")
GITEA_ACTIONS = ("opened", "synchronized", "reopened")


@dataclass
class PullRequest:
    """The request's number, target branch, head (branch, commit) and the ref that holds it."""

    number: int
    base: str
    branch: str
    commit: str
    ref: str
    fork: bool


def github_shape(payload: dict, actions: tuple[str, ...]) -> PullRequest | str:
    """GitHub, Gitea, Forgejo: the PR to build, or why the event builds nothing."""
    action = text(payload, "action")
    if action not in actions:
        return f"pull request action {action[:40]!r} builds nothing"
    pr = _object(payload, "pull_request")
    head, base = _object(pr, "head"), _object(pr, "base")
    number = _number(pr.get("number", payload.get("number")), "pull_request.number")
    head_repo, base_repo = head.get("repo"), base.get("repo")
    same = isinstance(head_repo, dict) and isinstance(base_repo, dict)
    # A deleted fork has no head repo: it counts as a fork.
    fork = not (same and head_repo.get("id") == base_repo.get("id"))
    return PullRequest(
        number,
        text(base, "ref"),
        text(head, "ref"),
        text(head, "sha"),
        f"refs/pull/{number}/head",
        fork,
    )


def gitlab_shape(payload: dict) -> PullRequest | str:
    """GitLab's Merge Request Hook: open, reopen, and an update that brought commits."""
    attrs = _object(payload, "object_attributes")
    action = text(attrs, "action")
    # "update" also means a new title or label: only an oldrev says new commits came.
    if action not in ("open", "reopen") and not (action == "update" and attrs.get("oldrev")):
        return f"merge request action {action[:40]!r} builds nothing"
    number = _number(attrs.get("iid"), "object_attributes.iid")
    return PullRequest(
        number,
        text(attrs, "target_branch"),
        text(attrs, "source_branch"),
        text(_object(attrs, "last_commit"), "id"),
        f"refs/merge-requests/{number}/head",
        attrs.get("source_project_id") != attrs.get("target_project_id"),
    )


def _number(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31:
        raise UserError(f'"{name}" must be a positive number')
    return value


def text(payload: dict, name: str) -> str:
    """A payload's string field: "" when absent, a 400 when it is not a string."""
    value = payload.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(f'"{name}" must be a string')
    return value


def _object(payload: dict, name: str) -> dict:
    value = payload.get(name)
    if not isinstance(value, dict):
        raise UserError(f'"{name}" must be an object')
    return value
