"""Push webhooks as the forges send them: signatures, filters, redeliveries, sizes, fuzz.

The payloads follow each forge's documented push event (GitHub "push",
Gitea/Forgejo "push", GitLab "Push Hook" / "Tag Push Hook"), trimmed to the
fields a real delivery has around the ones lightci reads. Most cases call
the Bottle app in this process; the last ones go through a real
`lightci serve` over loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


@pytest.fixture
def app_job(home):
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


# -- every forge, signed right and wrong -------------------------------------------

FORGES = {
    "github": (github, github_push),
    "gitea": (gitea, gitea_push),
    "gitlab": (gitlab, gitlab_push),
    "forgejo": (forgejo, gitea_push),
}


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


# -- fuzz: nothing a forge or an attacker sends gets a 5xx or a half-written row ---------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
push_like = st.fixed_dictionaries(
    {},
    optional={
        "ref": st.one_of(
            st.text(max_size=30), st.sampled_from(["refs/heads/main", "refs/tags/v1"]), json_values
        ),
        "after": st.one_of(st.sampled_from([SHA, ZERO]), json_values),
        "deleted": json_values,
        "commits": st.one_of(
            st.lists(
                st.dictionaries(
                    st.sampled_from(["id", "added", "modified", "removed"]), json_values
                )
            ),
            json_values,
        ),
        "checkout_sha": json_values,
        "total_commits_count": json_values,
        "branch": json_values,
        "commit": json_values,
        "params": json_values,
    },
)
FUZZ_HEADERS = [
    ("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="),
    ("X-Gitea-Event", "push", "X-Gitea-Signature", ""),
    ("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", None),
    ("X-Gitlab-Event", "Tag Push Hook", "X-Gitlab-Token", None),
    ("X-Lightci-Event", "push", "X-Lightci-Signature-256", "sha256="),
]
ALLOWED = {200, 202, 400, 401, 403, 404, 413, 429}


def signed_headers(body: bytes, choice: int, right: bool) -> dict:
    event_header, event, sig_header, prefix = FUZZ_HEADERS[choice]
    secret = SECRET if right else "wrong"
    value = secret if prefix is None else prefix + sign(body, secret)
    return {
        event_header: event,
        sig_header: value,
        "X-GitHub-Delivery": "",
        "Content-Type": "application/json",
    }


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=push_like, choice=st.integers(0, len(FUZZ_HEADERS) - 1), right=st.booleans())
def test_fuzzed_push_payloads_never_get_a_5xx(web, home, app_job, payload, choice, right):
    body = json.dumps(payload).encode()
    before = len(rows(home))
    answer = web.post("/hooks/app", body=body, headers=signed_headers(body, choice, right))
    assert answer.status in ALLOWED, answer
    assert answer.json()  # always JSON
    after = len(rows(home))
    assert after == before + (1 if answer.status == 202 else 0)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.binary(max_size=2000),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "X-GitHub-Event",
                "X-Gitea-Event",
                "X-Gitlab-Event",
                "X-Gitlab-Token",
                "X-Hub-Signature-256",
                "X-Gitea-Signature",
                "X-Lightci-Signature-256",
                "X-GitHub-Delivery",
                "Content-Type",
            ]
        ),
        # Up to 0xff: WSGI hands header bytes over as latin-1, and a byte that is not
        # UTF-8 (such as \xff) made Bottle raise, a 500 (issue 9, item 12).
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80)
        | st.sampled_from(["push", "Push Hook", "push\xff", "\xff", "sha256=\xff"]),
        max_size=6,
    ),
    sign_it=st.booleans(),
)
def test_random_bodies_and_headers_never_get_a_5xx(web, home, app_job, body, headers, sign_it):
    if sign_it:
        headers = {
            **headers,
            "X-Hub-Signature-256": "sha256=" + sign(body),
            "X-Lightci-Signature-256": "sha256=" + sign(body),
        }
    before = len(rows(home))
    answer = web.post("/hooks/app", body=body, headers=headers)
    assert answer.status in ALLOWED, answer
    assert len(rows(home)) == before + (1 if answer.status == 202 else 0)


# -- through a real `lightci serve` over loopback ------------------------------------------


def big_push(size: int) -> tuple[bytes, dict]:
    """A GitHub push of about `size` bytes: one commit touching very many files."""
    name = "lib/" + "x" * 990 + "/{:08d}.dart"
    files = [name.format(i) for i in range(size // 1012)]  # 1008 characters, quotes, ", "
    push = github_push(after=SHA2, commits=[commit(SHA2, added=files)])
    return github(push | {"head_commit": None})


def test_a_github_push_over_http_becomes_a_finished_build(home, serve, app_job):
    server = serve()
    body, headers = github(github_push())
    answer = server.post("/hooks/app", body, headers=headers)
    assert answer.status == 202, answer
    [build_id] = answer.json()["builds"]
    [row] = home.wait_for([build_id])
    assert row["status"] == "success", home.log(build_id)
    assert "built" in home.log(build_id)
    # Up to the 25 MB default cap works; past it is 413 with a JSON reason, and no row.
    cap = 25 * 1024 * 1024
    body, headers = big_push(cap - 200_000)
    assert cap - 300_000 < len(body) <= cap
    assert server.post("/hooks/app", body, headers=headers).status == 202
    body, headers = big_push(cap + 30_000)
    assert cap < len(body) < cap + 65536
    too_big = server.post("/hooks/app", body, headers=headers)
    assert too_big.status == 413
    assert "cap" in too_big.json()["error"]
    assert len(home.builds()) == 2


def test_copies_of_one_delivery_at_once_make_one_build(home, serve, app_job):
    from concurrent.futures import ThreadPoolExecutor

    server = serve()
    body, headers = github(github_push(), delivery="burst-1")
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: server.post("/hooks/app", body, headers=headers), range(8))
        )
    assert {a.status for a in answers} <= {200, 202}
    assert len({a.json()["builds"][0] for a in answers}) == 1
    assert len(home.builds()) == 1
