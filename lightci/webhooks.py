"""Push webhooks from GitHub, Gitea/Forgejo, GitLab and a generic JSON form.

The order is the point: the signature is checked over what the forge signed
(in constant time) before the JSON is parsed, so an unsigned body never
reaches the JSON parser; only then does the body become a ``Push``, and only a
push that the job's branch, tag and path filters want becomes a build. What
the forge signed is the raw body, except for Gitea and Forgejo in their form
mode: they sign the JSON and send it as the form's `payload` field.

Each forge is one small class: the header that names it, how it signs, where
its delivery id lives, and how its push payload reads.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from lightci.errors import UserError, json_object
from lightci.jobs import Job, check_commit
from lightci.pullrequests import (
    GITEA_ACTIONS,
    GITHUB_ACTIONS,
    PullRequest,
    github_shape,
    gitlab_shape,
    text,
)

ZERO_SHA = "0" * 40


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


@dataclass
class Push:
    """What a webhook asks for, whichever forge sent it."""

    forge: str
    event: str
    delivery: str = ""
    ref: str = ""
    commit: str = ""
    deleted: bool = False
    # Every file added, modified or removed by the push's commits; None when the
    # forge did not list them all (missing or truncated): such a push is not dropped.
    files: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    pr: PullRequest | None = None

    @property
    def branch(self) -> str | None:
        if self.ref.startswith("refs/heads/"):
            return self.ref.removeprefix("refs/heads/")
        if not self.ref.startswith("refs/"):
            return self.ref
        return None

    @property
    def tag(self) -> str | None:
        if self.ref.startswith("refs/tags/"):
            return self.ref.removeprefix("refs/tags/")
        return None


class Forge:
    name = ""
    event_header = ""
    delivery_headers: tuple[str, ...] = ()
    push_events: tuple[str, ...] = ("push",)
    ping_events: tuple[str, ...] = ("ping",)
    pr_events: tuple[str, ...] = ("pull_request",)
    signature_header = ""
    signs = "the body"  # what the signature covers, for the 401's words

    def signature(self, headers) -> str:
        return headers.get(self.signature_header) or ""

    def matches(self, given: str, signed: bytes, secret: str) -> bool:
        return _same(given, "sha256=" + _hmac_hex(secret, signed))

    def payload_bytes(self, body: bytes, content_type: str) -> bytes | None:
        """The JSON text of a delivery: the body, or a form's `payload` field."""
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            return _form_field(body, "payload")
        return body

    def signed_part(self, body: bytes, content_type: str) -> bytes | None:
        return body

    def delivery(self, headers) -> str:
        for name in self.delivery_headers:
            value = (headers.get(name) or "").strip()
            if value:
                return value[:200]
        return ""

    def event(self, headers) -> str:
        return (headers.get(self.event_header) or "").strip()

    def push(self, payload: dict, event: str) -> Push:
        """A push payload in the GitHub shape (Gitea and Forgejo copy it)."""
        commits = payload.get("commits")
        after = text(payload, "after")
        push = Push(
            forge=self.name,
            event=event,
            ref=text(payload, "ref"),
            commit="" if after == ZERO_SHA else after,
            deleted=bool(payload.get("deleted")) or after == ZERO_SHA,
        )
        push.files = _files(commits, self.total(payload, commits))
        return push

    def total(self, payload: dict, commits: Any) -> int | None:
        """How many commits the push had, when the forge says so."""
        return None

    def pull_request(self, payload: dict) -> PullRequest | str:
        return github_shape(payload, GITHUB_ACTIONS)


class GitHub(Forge):
    name = "github"
    event_header = "X-GitHub-Event"
    delivery_headers = ("X-GitHub-Delivery",)
    signature_header = "X-Hub-Signature-256"

    def total(self, payload, commits):
        # GitHub lists at most 2048 commits; a full list may have been cut.
        if isinstance(commits, list) and len(commits) >= 2048:
            return len(commits) + 1
        return None


class Gitea(Forge):
    """Gitea and Forgejo: hex HMAC without the "sha256=" prefix."""

    name = "gitea"
    event_header = "X-Gitea-Event"
    delivery_headers = ("X-Gitea-Delivery", "X-Forgejo-Delivery")
    pr_events = ("pull_request", "pull_request_sync")
    signature_header = "X-Gitea-Signature"
    signs = "the JSON payload"

    def signature(self, headers):
        return headers.get(self.signature_header) or headers.get("X-Forgejo-Signature") or ""

    def matches(self, given, signed, secret):
        return _same(given.removeprefix("sha256="), _hmac_hex(secret, signed))

    def signed_part(self, body, content_type):
        # services/webhook/deliver.go: the HMAC covers the JSON in form mode too.
        return self.payload_bytes(body, content_type)

    def event(self, headers):
        return (headers.get("X-Gitea-Event") or headers.get("X-Forgejo-Event") or "").strip()

    def pull_request(self, payload):
        return github_shape(payload, GITEA_ACTIONS)

    def total(self, payload, commits):
        total = payload.get("total_commits")
        return total if isinstance(total, int) else None


class GitLab(Forge):
    """GitLab sends the secret itself as a token, not a signature."""

    name = "gitlab"
    event_header = "X-Gitlab-Event"
    # Idempotency-Key stays the same across retries (GitLab 17.4+).
    delivery_headers = ("Idempotency-Key", "X-Gitlab-Event-UUID")
    push_events = ("Push Hook", "Tag Push Hook")
    ping_events = ()
    pr_events = ("Merge Request Hook",)
    signature_header = "X-Gitlab-Token"
    signs = ""  # the secret itself, not a signature of anything

    def matches(self, given, signed, secret):
        return _same(given, secret)

    def push(self, payload, event):
        push = super().push(payload, event)
        checkout = payload.get("checkout_sha")
        if isinstance(checkout, str) and checkout and not push.deleted:
            push.commit = checkout
        return push

    def pull_request(self, payload):
        return gitlab_shape(payload)

    def total(self, payload, commits):
        # GitLab lists at most 20 commits and gives the real count beside them.
        total = payload.get("total_commits_count")
        return total if isinstance(total, int) else None


class Generic(Forge):
    """`{"branch", "commit", "params"}` signed like GitHub, for scripts and other forges."""

    name = "generic"
    event_header = "X-Lightci-Event"
    pr_events = ()
    delivery_headers = ("X-Lightci-Delivery",)
    signature_header = "X-Lightci-Signature-256"

    def event(self, headers):
        return (headers.get(self.event_header) or "push").strip()

    def payload_bytes(self, body, content_type):
        # Always JSON: `curl -d` labels it a form, and the README's example uses it.
        return body

    def push(self, payload, event):
        params = payload.get("params") or {}
        if not isinstance(params, dict):
            raise UserError('"params" must be an object of NAME: value')
        for name in ("branch", "commit"):
            if payload.get(name) is not None and not isinstance(payload[name], str):
                raise UserError(f'"{name}" must be a string')
        return Push(
            forge=self.name,
            event=event,
            ref=payload.get("branch") or "",
            commit=payload.get("commit") or "",
            params=params,
        )


def forge_for(headers) -> Forge:
    """Gitea also sends X-GitHub-Event for compatibility, so it is asked first."""
    if headers.get("X-Gitea-Event") or headers.get("X-Forgejo-Event"):
        return Gitea()
    if headers.get("X-Gitlab-Event"):
        return GitLab()
    if headers.get("X-GitHub-Event"):
        return GitHub()
    return Generic()


def _files(commits: Any, total: int | None) -> list[str] | None:
    """Added, modified and removed files of every commit; None when not all are known."""
    if not isinstance(commits, list) or not commits:
        return None  # a new branch or a force push without new commits: nothing to go by
    if total is not None and total > len(commits):
        return None
    files: list[str] = []
    for commit in commits:
        if not isinstance(commit, dict):
            return None
        for kind in ("added", "modified", "removed"):
            listed = commit.get(kind)
            if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
                return None
            files.extend(listed)
    return files


def secret_for(job: Job, global_secret: str) -> str:
    secret = job.webhook_secret or global_secret
    if not secret:
        raise UserError(
            f"job {job.name!r} has no webhook secret, so it refuses webhooks: set "
            f'webhook_secret = "..." in jobs/{job.name}/job.toml, or [webhooks] secret in '
            "lightci.toml (or LIGHTCI_WEBHOOKS_SECRET), and the same secret in the forge",
            status=403,
        )
    return secret


def _form_field(body: bytes, name: str) -> bytes | None:
    """One field of an urlencoded form, as the sender's bytes (latin-1 maps byte to byte)."""
    try:
        fields = parse_qs(body.decode("latin-1"), strict_parsing=True, encoding="latin-1")
    except ValueError:
        return None
    values = fields.get(name)
    return values[0].encode("latin-1") if values else None


def decode(text: bytes | None) -> dict:
    """The payload as a dict, from the JSON text payload_bytes found."""
    if text is None or not text.strip():
        raise UserError("the body is not JSON (nor a form with a JSON payload field)")
    return json_object(text, "the body (or its form's payload field)")


@dataclass
class Verdict:
    """What to do with a webhook: build this push, or skip it for a reason."""

    push: Push | None = None
    skipped: str = ""
    trigger: str = ""


def judge(job: Job, headers, body: bytes, content_type: str, global_secret: str) -> Verdict:
    """Check the signature, then read the push and apply the job's filters.

    Raises UserError 401/403/400 for unsigned, unconfigured or malformed hooks.
    """
    forge = forge_for(headers)
    secret = secret_for(job, global_secret)
    given = forge.signature(headers)
    where = forge.signature_header
    if not given:
        raise UserError(
            f"missing signature: no {where} header; give the forge's webhook the job's "
            "webhook_secret (or [webhooks] secret) as its secret",
            status=401,
        )
    signed = forge.signed_part(body, content_type)
    if signed is None:
        raise UserError("the form body has no payload field, which is what the forge signs")
    if not forge.matches(given, signed, secret):
        setting = "the job's webhook_secret (or [webhooks] secret)"
        if forge.signs:
            why = (
                f"{where} does not match {forge.signs}: the forge's secret is not {setting}, "
                "or something changed the body on its way here"
            )
        else:
            why = f"{where} is not {setting}"
        raise UserError(f"wrong signature: {why}", status=401)
    event = forge.event(headers)
    if event in forge.ping_events:
        return Verdict(skipped="ping")
    if event in forge.pr_events:
        payload = decode(forge.payload_bytes(body, content_type))
        return _pull_request(job, forge, event, payload, forge.delivery(headers))
    if event not in forge.push_events:
        return Verdict(skipped=f"event {event[:60]!r} is not a push")
    payload = decode(forge.payload_bytes(body, content_type))
    push = forge.push(payload, event)
    check_commit(push.commit)
    push.delivery = forge.delivery(headers)
    trigger = f"webhook:{forge.name}"
    if push.deleted:
        return Verdict(skipped=f"{push.ref} was deleted")
    if push.tag is not None:
        if not job.wants_tag(push.tag):
            return Verdict(skipped=f"tag {push.tag} (the job's tags filter does not list it)")
        return Verdict(push=push, trigger=trigger)
    branch = push.branch
    if branch is None:
        return Verdict(skipped=f"{push.ref} is not a branch or a tag")
    if not job.wants_branch(branch):
        return Verdict(skipped=f"branch {branch} is not in the job's branches filter")
    if push.files is not None and not job.wants_paths(push.files):
        return Verdict(skipped="no changed file matches the job's paths filter")
    return Verdict(push=push, trigger=trigger)


def _pull_request(job: Job, forge: Forge, event: str, payload: dict, delivery: str) -> Verdict:
    """A PR's head builds when the job asks for PRs and its target branch passes the filter."""
    if not job.pull_requests:
        return Verdict(
            skipped="pull requests build nothing here (pull_requests = true builds them)"
        )
    pr = forge.pull_request(payload)
    if isinstance(pr, str):
        return Verdict(skipped=pr)
    if not pr.commit:
        raise UserError("the pull request names no head commit")
    check_commit(pr.commit, "head commit")
    if not pr.branch or not pr.base:
        raise UserError("the pull request names no head or target branch")
    if not job.wants_branch(pr.base):
        return Verdict(skipped=f"target branch {pr.base} is not in the job's branches filter")
    push = Push(forge.name, event, delivery, "refs/heads/" + pr.branch, pr.commit, pr=pr)
    return Verdict(push=push, trigger=f"webhook:{forge.name}:pull_request")
