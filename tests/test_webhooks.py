"""Push webhooks as the forges send them: signatures, filters, redeliveries, sizes.

The payloads (tests/forges.py) follow each forge's documented push event, trimmed
to the fields a real delivery has around the ones lightci reads. These cases call
the Bottle app in this process; fuzzing is in test_webhooks_fuzz.py, a real
`lightci serve` over loopback in test_webhooks_serve.py.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from tests.forges import (
    FORGES,
    SECRET,
    SHA,
    SHA2,
    ZERO,
    app_job_fixture,  # noqa: F401 - the app_job fixture
    commit,
    generic,
    gitea,
    gitea_push,
    github,
    github_push,
    gitlab,
    gitlab_push,
    hook,
    rows,
    sha,
    sign,
)

# -- every forge, signed right and wrong -------------------------------------------


@pytest.mark.parametrize("forge", sorted(FORGES))
def test_a_signed_push_from_each_forge_queues_one_build(web, home, app_job, forge):
    wrap, payload = FORGES[forge]
    answer = hook(web, "app", wrap(payload(ref="refs/heads/release/1.2")))
    assert answer.status == 202, answer
    [build_id] = answer.json()["builds"]
    row = home.build(build_id)
    assert (row["status"], row["branch"], row["commit"]) == ("queued", "release/1.2", SHA)
    assert row["trigger"] == f"webhook:{'gitea' if forge == 'forgejo' else forge}"
    assert row["params"] == '{"flavor": "dev"}'


@pytest.mark.parametrize("forge", sorted(FORGES))
def test_a_wrong_or_missing_signature_is_401_and_queues_nothing(web, home, app_job, forge):
    wrap, payload = FORGES[forge]
    wrong = wrap(payload(), **({"token": "guess"} if forge == "gitlab" else {"secret": "guess"}))
    answer = hook(web, "app", wrong)
    assert answer.status == 401
    assert "signature" in answer.json()["error"]
    body, headers = wrap(payload())
    unsigned = {k: v for k, v in headers.items() if "Signature" not in k and k != "X-Gitlab-Token"}
    assert web.post("/hooks/app", body=body, headers=unsigned).status == 401
    if forge != "gitlab":  # GitLab's token does not cover the body; the others' HMAC does
        body, headers = wrap(payload())
        assert web.post("/hooks/app", body=body + b" ", headers=headers).status == 401
    assert rows(home) == []


def test_the_generic_form_takes_branch_commit_and_params(web, home, app_job):
    answer = hook(
        web, "app", generic({"branch": "main", "commit": SHA2, "params": {"flavor": "qa"}})
    )
    assert answer.status == 202, answer
    row = home.build(answer.json()["builds"][0])
    assert (row["branch"], row["commit"], row["trigger"]) == ("main", SHA2, "webhook:generic")
    assert json.loads(row["params"]) == {"flavor": "qa"}
    bad = hook(web, "app", generic({"branch": "main", "params": {"nope": "1"}}))
    assert bad.status == 400 and "nope" in bad.json()["error"]
    assert hook(web, "app", generic({"branch": "main"}, secret="x")).status == 401
    not_a_commit = hook(web, "app", generic({"branch": "main", "commit": "HEAD; rm -rf /"}))
    assert not_a_commit.status == 400 and "hex commit" in not_a_commit.json()["error"]
    assert len(rows(home)) == 1


def test_a_job_without_any_secret_refuses_webhooks_and_says_how_to_set_one(web, home):
    home.job("open", "", build="true\n")
    answer = hook(web, "open", github(github_push()))
    assert answer.status == 403
    assert "webhook_secret" in answer.json()["error"]
    assert "[webhooks] secret" in answer.json()["error"]
    assert rows(home) == []


def test_the_global_secret_serves_jobs_without_their_own(web, home, monkeypatch):
    home.job("open", "", build="true\n")
    monkeypatch.setenv("LIGHTCI_WEBHOOKS_SECRET", "global-one")
    assert hook(web, "open", github(github_push(), secret="global-one")).status == 202
    assert hook(web, "open", github(github_push(), secret=SECRET)).status == 401


# -- what is skipped with 200 and a reason --------------------------------------------


def test_a_ping_and_other_events_are_skipped(web, home, app_job):
    ping = {"zen": "Keep it logically awesome.", "hook_id": 1, "hook": {"type": "Repository"}}
    answer = hook(web, "app", github(ping, event="ping"))
    assert (answer.status, answer.json()) == (200, {"skipped": "ping"})
    answer = hook(web, "app", github({"action": "opened"}, event="issues"))
    assert answer.status == 200 and "not a push" in answer.json()["skipped"]
    answer = hook(web, "app", gitlab({"object_kind": "note"}, event="Note Hook"))
    assert answer.status == 200 and "not a push" in answer.json()["skipped"]
    assert rows(home) == []


@pytest.mark.parametrize("forge", sorted(FORGES))
def test_a_deleted_branch_is_skipped(web, home, app_job, forge):
    wrap, payload = FORGES[forge]
    data = payload(after=ZERO, commits=[])
    if forge == "github":
        data["deleted"] = True
    answer = hook(web, "app", wrap(data))
    assert answer.status == 200
    assert "deleted" in answer.json()["skipped"]
    assert rows(home) == []


def test_the_branch_filter_drops_other_branches(web, home, app_job):
    answer = hook(web, "app", github(github_push(ref="refs/heads/feature/login")))
    assert answer.status == 200
    assert "branches filter" in answer.json()["skipped"]
    # "release/*" is one path segment: release/1.2/hotfix is not in it.
    assert hook(web, "app", github(github_push(ref="refs/heads/release/1.2/x"))).status == 200
    assert hook(web, "app", github(github_push(ref="refs/heads/release/2.0"))).status == 202
    assert [r["branch"] for r in rows(home)] == ["release/2.0"]


@pytest.fixture
def paths_job(home):
    home.job(
        "mobile",
        f"""
        webhook_secret = "{SECRET}"
        paths = ["lib/**", "pubspec.yaml"]
        """,
        build="true\n",
    )
    return "mobile"


def test_the_path_filter_looks_at_every_commit_of_the_push(web, home, paths_job):
    docs_only = [commit(SHA, modified=["README.md"]), commit(SHA2, added=["docs/a.md"])]
    answer = hook(web, "mobile", github(github_push(after=SHA2, commits=docs_only)))
    assert answer.status == 200 and "paths filter" in answer.json()["skipped"]
    # The first commit touched lib/, the second only docs: the push still counts.
    mixed = [commit(SHA, removed=["lib/src/old.dart"]), commit(SHA2, modified=["README.md"])]
    assert hook(web, "mobile", github(github_push(after=SHA2, commits=mixed))).status == 202
    pubspec = [commit(SHA, modified=["pubspec.yaml"])]
    assert hook(web, "mobile", gitea(gitea_push(commits=pubspec))).status == 202
    assert len(rows(home)) == 2


def test_a_push_whose_file_lists_are_missing_or_truncated_is_not_dropped(web, home, paths_job):
    # GitLab lists 20 commits of a bigger push; the other 30 may touch lib/.
    twenty = [commit(SHA, modified=["README.md"]) for _ in range(20)]
    push = gitlab_push(after=sha(1), commits=twenty, total=50)
    assert hook(web, "mobile", gitlab(push)).status == 202
    # Gitea cut the list too (total_commits says more).
    push = gitea_push(after=sha(2), commits=twenty[:5], total=9)
    assert hook(web, "mobile", gitea(push)).status == 202
    # No file lists at all (some forges' compact payloads).
    bare = [{"id": SHA, "message": "x"}]
    assert hook(web, "mobile", github(github_push(after=sha(3), commits=bare))).status == 202
    # A new branch pushed without new commits has an empty list: nothing to go by.
    assert hook(web, "mobile", github(github_push(after=sha(4), commits=[]))).status == 202
    assert len(rows(home)) == 4


def test_tag_pushes_are_ignored_unless_the_job_lists_tags(web, home, app_job):
    tag = github(github_push(ref="refs/tags/v1.0.0"))
    answer = hook(web, "app", tag)
    assert answer.status == 200 and "tag v1.0.0" in answer.json()["skipped"]
    home.job("rel", f'webhook_secret = "{SECRET}"\ntags = ["v*"]\n', build="true\n")
    answer = hook(
        web, "rel", gitlab(gitlab_push(ref="refs/tags/v2.1", kind="tag_push"), "Tag Push Hook")
    )
    assert answer.status == 202, answer
    row = home.build(answer.json()["builds"][0])
    assert (row["branch"], row["tag"], row["commit"]) == ("", "v2.1", SHA)
    assert hook(web, "rel", github(github_push(ref="refs/tags/nightly"))).status == 200


# -- redeliveries, the queue cap, sizes, malformed bodies --------------------------------


@pytest.mark.parametrize("forge", sorted(FORGES))
def test_a_redelivery_queues_nothing_new(web, home, app_job, forge):
    wrap, payload = FORGES[forge]
    first = hook(web, "app", wrap(payload(), delivery="d-42"))
    again = hook(web, "app", wrap(payload(), delivery="d-42"))
    assert first.status == 202
    assert again.status == 200
    assert again.json()["builds"] == first.json()["builds"]
    assert "redelivery" in again.json()["skipped"]
    assert hook(web, "app", wrap(payload(after=SHA2), delivery="d-43")).status == 202
    assert len(rows(home)) == 2


def test_the_same_delivery_id_for_another_job_is_its_own_build(web, home, app_job):
    home.job("other", f'webhook_secret = "{SECRET}"\n', build="true\n")
    a = hook(web, "app", generic({"branch": "main"}, delivery="same"))
    b = hook(web, "other", generic({"branch": "main"}, delivery="same"))
    assert (a.status, b.status) == (202, 202)
    assert a.json()["builds"] != b.json()["builds"]


def test_past_the_queue_cap_a_webhook_gets_429_with_retry_after(web, home, app_job, monkeypatch):
    monkeypatch.setenv("LIGHTCI_SERVER_MAX_QUEUED", "2")
    assert hook(web, "app", github(github_push(after=sha(1)))).status == 202
    assert hook(web, "app", github(github_push(after=sha(2)))).status == 202
    full = hook(web, "app", github(github_push(after=sha(3))))
    assert full.status == 429
    assert int(full.headers["retry-after"]) > 0
    assert "max_queued" in full.json()["error"]
    assert len(rows(home)) == 2


def test_a_large_push_under_the_cap_works_and_one_over_it_is_413(web, home, paths_job, monkeypatch):
    files = [f"lib/src/module_{i}/file_{j}.dart" for i in range(1000) for j in range(90)]
    many = [commit(SHA, modified=files[k : k + 300]) for k in range(0, len(files), 300)]
    body, headers = github(github_push(commits=many))
    assert len(body) > 3_000_000  # far past the 100 KB body cap Bottle has by default
    assert web.post("/hooks/mobile", body=body, headers=headers).status == 202
    monkeypatch.setenv("LIGHTCI_SERVER_MAX_BODY", "100000")
    answer = web.post("/hooks/mobile", body=body, headers=headers)
    assert answer.status == 413
    assert "cap" in answer.json()["error"]
    assert len(rows(home)) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2, 3]",
        b'"a string"',
        b"\xff\xfe\x00garbage",
        b"",
        b'{"ref": 5, "after": "x"}',
        b'{"ref": "refs/heads/main", "after": ["x"]}',
        b"[" * 100000 + b"]" * 100000,
    ],
)
def test_a_malformed_but_signed_body_is_400(web, home, app_job, body):
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "x",
        "X-Hub-Signature-256": "sha256=" + sign(body),
    }
    answer = web.post("/hooks/app", body=body, headers=headers)
    assert answer.status == 400, answer
    assert answer.json()["error"]
    assert rows(home) == []


def test_an_unknown_job_is_404_and_a_bad_name_400(web, home, app_job):
    assert hook(web, "nope", github(github_push())).status == 404
    assert hook(web, "bad name!", github(github_push())).status == 400


def test_a_form_encoded_github_delivery_works(web, home, app_job):
    body = urlencode({"payload": json.dumps(github_push())}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "form-1",
        "X-Hub-Signature-256": "sha256=" + sign(body),
    }
    assert web.post("/hooks/app", body=body, headers=headers).status == 202
