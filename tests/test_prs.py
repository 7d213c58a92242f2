"""Pull/merge requests and tags, from the forges' real deliveries (tests/forge-payloads/).

Every payload here is a forge's own, signed as that forge signs it; where a
case needs another action or commit, the real payload is loaded and that one
field changed.
"""

from __future__ import annotations

import hmac
import json
import uuid
from pathlib import Path

import pytest

PAYLOADS = Path(__file__).parent / "forge-payloads"
SECRET = "pr-hook-secret"


def delivery(forge: str, name: str, payload: dict | None = None, secret: str = SECRET):
    """(body, headers) of a real delivery; `payload` replaces the file's JSON when given."""
    raw = (PAYLOADS / ("gitea" if forge == "forgejo" else forge) / name).read_bytes()
    body = raw if payload is None else json.dumps(payload).encode()
    spec = json.loads((PAYLOADS / forge / "headers.json").read_text())
    event = spec["events"][name]
    event, event_type = (event, event) if isinstance(event, str) else event
    digest = hmac.new(secret.encode(), body, "sha256").hexdigest()
    values = {
        "{UUID}": str(uuid.uuid4()),
        "{UUID2}": str(uuid.uuid4()),
        "{EVENT}": event,
        "{EVENT_TYPE}": event_type,
        "{SECRET_AS_IS}": secret,
        "{HMAC_SHA256_HEX_OF_RAW_BODY}": digest,
        "{HMAC_SHA1_HEX_OF_RAW_BODY}": hmac.new(secret.encode(), body, "sha1").hexdigest(),
        "{HMAC_SHA256_HEX_OF_JSON_PAYLOAD}": digest,
        "{HMAC_SHA1_HEX_OF_JSON_PAYLOAD}": hmac.new(secret.encode(), body, "sha1").hexdigest(),
    }
    headers = {}
    for header, value in spec["_common"].items():
        for placeholder, real in values.items():
            value = value.replace(placeholder, real)
        headers[header] = value
    return body, headers


def payload(forge: str, name: str) -> dict:
    return json.loads((PAYLOADS / ("gitea" if forge == "forgejo" else forge) / name).read_text())


@pytest.fixture
def pr_job(home):
    home.job(
        "app",
        f'webhook_secret = "{SECRET}"\npull_requests = true\nkey = "pr{{pr}}"\n'
        'supersede = "running"\ntags = ["v*"]\n',
        build="true\n",
    )


# (forge, file, pr, head branch, target, head commit, from a fork)
PULL_REQUESTS = [
    ("github", "pull_request-opened.json", 2, "changes", "master", "ec26c3e57ca3", False),
    ("github", "pull_request-synchronize.json", 2, "changes", "master", "ec26c3e57ca3", False),
    ("gitea", "pull_request-opened.json", 1, "feature", "master", "2eba238e3360", False),
    ("gitea", "pull_request-synchronized.json", 1, "feature", "master", "2eba238e3360", False),
    ("forgejo", "pull_request-opened.json", 1, "feature", "master", "2eba238e3360", False),
    ("gitea", "pull_request-opened-2.json", 2, "master", "master", "48e773f892a8", True),
    ("gitlab", "merge_request-opened.json", 1, "feature", "master", "c4c79227ed61", False),
    ("gitlab", "merge_request-docs.json", 1, "ms-viewport", "master", "da1560886d4f", False),
]


@pytest.mark.parametrize("forge, name, number, head, base, sha, fork", PULL_REQUESTS)
def test_every_forge_s_pull_request_builds_its_head(
    web, home, pr_job, forge, name, number, head, base, sha, fork
):
    body, headers = delivery(forge, name)
    answer = web.post("/hooks/app", body=body, headers=headers)
    assert answer.status == 202, answer
    [build_id] = answer.json()["builds"]
    build = web.get(f"/api/builds/{build_id}").json()
    assert (build["pr"], build["branch"], build["pr_base"]) == (number, head, base)
    assert build["commit"].startswith(sha) and build["tag"] == ""
    assert build["key"] == f"app:pr{number}"
    assert build["trigger"].endswith(":pull_request")
    row = home.db().execute("SELECT fork, pr_ref FROM build WHERE id = ?", (build_id,)).fetchone()
    ref = "merge-requests" if forge == "gitlab" else "pull"
    assert (bool(row[0]), row[1]) == (fork, f"refs/{ref}/{number}/head")
    # The same event again, with a new delivery id: a replay, nothing new.
    body, headers = delivery(forge, name)
    again = web.post("/hooks/app", body=body, headers=headers)
    assert again.status == 200 and again.json()["builds"] == [build_id], again


# (forge, file, where the action lives, actions that build nothing)
QUIET_ACTIONS = [
    ("github", "pull_request-opened.json", None, ["closed", "labeled", "edited", "assigned"]),
    ("gitea", "pull_request-opened.json", None, ["closed", "label_updated", "edited"]),
    ("gitlab", "merge_request-opened.json", "object_attributes", ["close", "merge", "update"]),
]


@pytest.mark.parametrize("forge, name, where, actions", QUIET_ACTIONS)
def test_closing_labelling_or_editing_a_pull_request_builds_nothing(
    web, home, pr_job, forge, name, where, actions
):
    for action in actions:
        changed = payload(forge, name)
        (changed[where] if where else changed)["action"] = action
        body, headers = delivery(forge, name, changed)
        answer = web.post("/hooks/app", body=body, headers=headers)
        assert answer.status == 200 and "builds nothing" in answer.json()["skipped"], answer
    assert home.builds() == []
    # GitLab's "update" builds only when new commits came (oldrev).
    if forge == "gitlab":
        changed = payload(forge, name)
        changed[where].update(action="update", oldrev="a" * 40)
        body, headers = delivery(forge, name, changed)
        assert web.post("/hooks/app", body=body, headers=headers).status == 202


def test_a_job_without_pull_requests_true_builds_no_pull_request(web, home):
    home.job("app", f'webhook_secret = "{SECRET}"\n', build="true\n")
    for forge, name in (
        ("github", "pull_request-opened.json"),
        ("gitlab", "merge_request-docs.json"),
    ):
        body, headers = delivery(forge, name)
        answer = web.post("/hooks/app", body=body, headers=headers)
        assert answer.status == 200 and "pull_requests = true" in answer.json()["skipped"]
    assert home.builds() == []


def test_a_pull_request_into_a_branch_the_job_does_not_build_is_skipped(web, home):
    home.job(
        "app",
        f'webhook_secret = "{SECRET}"\npull_requests = true\nbranches = ["main"]\n',
        build="true\n",
    )
    body, headers = delivery("github", "pull_request-opened.json")
    answer = web.post("/hooks/app", body=body, headers=headers)
    assert answer.status == 200 and "target branch master" in answer.json()["skipped"]


@pytest.mark.parametrize(
    "forge, name, tag",
    [("github", "push-tag-created.json", "v0.0.1"), ("gitlab", "tag_push.json", None)],
)
def test_a_tag_has_its_own_field_and_key(web, home, forge, name, tag):
    home.job(
        "rel",
        f'webhook_secret = "{SECRET}"\ntags = ["*"]\nkey = "t-{{tag}}-b-{{branch}}"\n',
        build="true\n",
    )
    body, headers = delivery(forge, name)
    answer = web.post("/hooks/rel", body=body, headers=headers)
    assert answer.status == 202, answer
    build = web.get(f"/api/builds/{answer.json()['builds'][0]}").json()
    expected = tag or payload(forge, name)["ref"].removeprefix("refs/tags/")
    assert (build["branch"], build["tag"], build["pr"]) == ("", expected, None)
    assert build["key"] == f"rel:t-{expected}-b-"


def test_under_the_default_key_a_fork_s_master_cannot_supersede_master(web, home):
    """A fork PR whose head branch is "master" (gitea's opened-2) gets a key of its own,
    not master's: with supersede = "running" it would cancel master's builds, and its
    result is not master's badge. A tag's builds get their own key too."""
    home.job(
        "app",
        f'webhook_secret = "{SECRET}"\npull_requests = true\nsupersede = "running"\ntags = ["*"]\n',
        build="true\n",
    )
    master = home.trigger("app", "--branch", "master")
    body, headers = delivery("gitea", "pull_request-opened-2.json")
    answer = web.post("/hooks/app", body=body, headers=headers)
    assert answer.status == 202, answer
    pr = web.get(f"/api/builds/{answer.json()['builds'][0]}").json()
    assert (pr["branch"], pr["key"]) == ("master", "app:pr 2")
    assert home.build(master)["status"] == "queued" and home.build(master)["key"] == "app:master"
    body, headers = delivery("github", "push-tag-created.json")
    tag = web.post("/hooks/app", body=body, headers=headers).json()["builds"][0]
    assert home.build(tag)["key"] == "app:tag v0.0.1"
    with home.db() as conn:  # master passed, then the fork's PR of "master" failed
        conn.execute("UPDATE build SET status = 'success', finished_at = 2 WHERE id = ?", (master,))
        conn.execute(
            "UPDATE build SET status = 'failed', finished_at = 3 WHERE id = ?", (pr["id"],)
        )
    assert "app: success" in web.get("/badge/app.svg?branch=master").text
    assert "app: success" in web.get("/badge/app.svg").text  # the project's badge neither


def test_a_pull_request_s_build_never_deploys_pushes_images_or_bumps(bound):
    """Runner shipped every passing build: an outsider's PR became the live container, or
    pushed images and a gitops bump with the registry's and the deploy repo's credentials."""
    from lightci import builds, models

    home = bound
    home.job(
        "app",
        '[deploy]\nport = 8080\n[[images]]\ncomponent = "core"\ndockerfile = "Dockerfile"\n'
        'push = "127.0.0.1:9/org/app"\n',
        build="echo tested\n",
    )
    fork = {"pr": 7, "pr_base": "main", "pr_ref": "refs/pull/7/head", "fork": True}
    build = builds.trigger("app", branch="feature", trigger="webhook:pull_request", origin=fork)
    home.start_worker()
    row = home.wait_for([build.id])[0]
    log = home.log(build.id)
    assert row["status"] == "success", log
    assert "tested" in log and "a pull request's build: no images, bump or deploy" in log
    assert models.Deployment.select().count() == 0 and models.Image.select().count() == 0
