"""Push deliveries as each forge sends them, signed with the tests' secret.

The payloads follow each forge's documented push event (GitHub "push",
Gitea/Forgejo "push", GitLab "Push Hook" / "Tag Push Hook"), trimmed to the
fields a real delivery has around the ones lightci reads. Shared by the
tests/test_webhooks*.py files, which import app_job_fixture: the app_job fixture.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest

SECRET = "s3cret-hook"
SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
SHA2 = "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327"
ZERO = "0" * 40


def sha(n: int) -> str:
    """The n-th made-up commit id: a push of a commit built already queues nothing new."""
    return f"{n:040x}"


def commit(sha=SHA, added=(), modified=(), removed=(), message="Update README"):
    return {
        "id": sha,
        "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
        "distinct": True,
        "message": message,
        "timestamp": "2024-05-02T10:00:00+02:00",
        "url": f"https://github.com/octo/app/commit/{sha}",
        "author": {"name": "Mona", "email": "mona@example.com", "username": "mona"},
        "committer": {"name": "Mona", "email": "mona@example.com", "username": "mona"},
        "added": list(added),
        "removed": list(removed),
        "modified": list(modified),
    }


def github_push(ref="refs/heads/main", after=SHA, commits=None, deleted=False):
    commits = [commit(after, modified=["README.md"])] if commits is None else commits
    return {
        "ref": ref,
        "before": "9049f1265b7d61be4a8904a9a27120d2064dab3b",
        "after": after,
        "created": False,
        "deleted": deleted,
        "forced": False,
        "base_ref": None,
        "compare": "https://github.com/octo/app/compare/9049f1265b7d...6113728f27ae",
        "commits": commits,
        "head_commit": commits[-1] if commits else None,
        "repository": {"id": 186853002, "name": "app", "full_name": "octo/app"},
        "pusher": {"name": "mona", "email": "mona@example.com"},
        "sender": {"login": "mona", "id": 21031067},
    }


def gitea_push(ref="refs/heads/main", after=SHA, commits=None, total=None):
    commits = [commit(after, added=["src/app.py"])] if commits is None else commits
    return {
        "ref": ref,
        "before": "28e1879d029cb852e4844d9c718537df08844e03",
        "after": after,
        "compare_url": "https://gitea.example.com/org/app/compare/28e1879d...bffeb74224",
        "commits": commits,
        "total_commits": len(commits) if total is None else total,
        "head_commit": commits[-1] if commits else None,
        "repository": {"id": 140, "name": "app", "full_name": "org/app"},
        "pusher": {"id": 1, "login": "gitea"},
        "sender": {"id": 1, "login": "gitea"},
    }


def gitlab_push(ref="refs/heads/main", after=SHA, commits=None, total=None, kind="push"):
    commits = [commit(after, modified=["lib/main.dart"])] if commits is None else commits
    return {
        "object_kind": kind,
        "event_name": kind,
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
        "after": after,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": None if after == ZERO else after,
        "message": None,
        "user_id": 4,
        "user_name": "John Smith",
        "user_username": "jsmith",
        "project_id": 15,
        "project": {"id": 15, "name": "app", "path_with_namespace": "mike/app"},
        "commits": commits,
        "total_commits_count": len(commits) if total is None else total,
        "push_options": {},
        "repository": {"name": "app", "homepage": "http://example.com/mike/app"},
    }


def sign(body: bytes, secret=SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github(payload, event="push", secret=SECRET, delivery=None):
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": "sha256=" + sign(body, secret),
        "User-Agent": "GitHub-Hookshot/044aadd",
    }


def gitea(payload, event="push", secret=SECRET, delivery=None):
    body = json.dumps(payload).encode()
    delivery = delivery or str(uuid.uuid4())
    # Gitea also sends GitHub's and Gogs' headers; Forgejo adds its own beside them.
    return body, {
        "Content-Type": "application/json",
        "X-Gitea-Event": event,
        "X-Gitea-Event-Type": event,
        "X-Gitea-Delivery": delivery,
        "X-Gitea-Signature": sign(body, secret),
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Gogs-Event": event,
        "X-Hub-Signature-256": "sha256=" + sign(body, secret),
    }


def forgejo(payload, event="push", secret=SECRET, delivery=None):
    """Forgejo's own headers only (newer Forgejo may drop the Gitea ones)."""
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Forgejo-Event": event,
        "X-Forgejo-Delivery": delivery or str(uuid.uuid4()),
        "X-Forgejo-Signature": sign(body, secret),
    }


def gitlab(payload, event="Push Hook", token=SECRET, delivery=None):
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": delivery or str(uuid.uuid4()),
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "User-Agent": "GitLab/17.0.0",
    }


def generic(payload, secret=SECRET, delivery=None):
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Lightci-Signature-256": "sha256=" + sign(body, secret),
    }
    if delivery:
        headers["X-Lightci-Delivery"] = delivery
    return body, headers


@pytest.fixture(name="app_job")
def app_job_fixture(home):
    home.job(
        "app",
        f"""
        webhook_secret = "{SECRET}"
        branches = ["main", "release/*"]
        [params]
        flavor = "dev"
        """,
        build="echo built\n",
    )
    return "app"


def rows(home):
    return home.builds() if (home.path / "lightci.db").exists() else []


def hook(web, job, body_headers):
    body, headers = body_headers
    return web.post(f"/hooks/{job}", body=body, headers=headers)


FORGES = {
    "github": (github, github_push),
    "gitea": (gitea, gitea_push),
    "gitlab": (gitlab, gitlab_push),
    "forgejo": (forgejo, gitea_push),
}
