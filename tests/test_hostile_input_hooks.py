"""Forge deliveries an outside attacker sent lightci (issue 9, items 11, 13, 14).

Replayed signed pushes, Gitea's form deliveries, the README's generic-webhook
example as printed. The forge deliveries are real ones (tests/forge-payloads/SOURCES.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import REPO
from tests.hostile import (
    SECRET,
    app_job_fixture,  # noqa: F401 - the app_job fixture
)

PAYLOADS = Path(__file__).parent / "forge-payloads"


# -- item 11: a replayed signed push queues nothing new ---------------------------------


def real_delivery(forge: str, payload: str, secret=SECRET, as_form=False, delivery=None):
    """A forge's delivery of one of its real payloads, headers as that forge sends them."""
    json_body = (PAYLOADS / ("gitea" if forge == "forgejo" else forge) / payload).read_bytes()
    spec = json.loads((PAYLOADS / forge / "headers.json").read_text())
    body = urlencode({"payload": json_body.decode()}).encode() if as_form else json_body
    event = spec["events"][payload]
    event, event_type = (event, event) if isinstance(event, str) else event
    values = {
        "{UUID}": delivery or str(uuid.uuid4()),
        "{UUID2}": str(uuid.uuid4()),
        "{EVENT}": event,
        "{EVENT_TYPE}": event_type,
        "{SECRET_AS_IS}": secret,
        "{HMAC_SHA256_HEX_OF_RAW_BODY}": hmac.new(secret.encode(), body, "sha256").hexdigest(),
        "{HMAC_SHA1_HEX_OF_RAW_BODY}": hmac.new(secret.encode(), body, "sha1").hexdigest(),
        # Gitea and Forgejo sign the JSON, in form mode too (services/webhook/deliver.go).
        "{HMAC_SHA256_HEX_OF_JSON_PAYLOAD}": hmac.new(
            secret.encode(), json_body, "sha256"
        ).hexdigest(),
        "{HMAC_SHA1_HEX_OF_JSON_PAYLOAD}": hmac.new(secret.encode(), json_body, "sha1").hexdigest(),
    }
    headers = {}
    for name, value in spec["_common"].items():
        for placeholder, real in values.items():
            value = value.replace(placeholder, real)
        headers[name] = value
    if as_form:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return body, headers


REAL_PUSHES = [("github", "push-branch.json"), ("gitea", "push.json"), ("gitlab", "push.json")]


@pytest.mark.parametrize("forge, payload", REAL_PUSHES)
def test_a_captured_push_replayed_with_a_new_or_no_delivery_id_builds_nothing(
    web, home, app_job, forge, payload
):
    body, headers = real_delivery(forge, payload)
    first = web.post("/hooks/app", body=body, headers=headers)
    assert first.status == 202, first
    [build_id] = first.json()["builds"]
    ids = [k for k in headers if any(w in k for w in ("Delivery", "UUID", "Idempotency"))]
    fresh_id = {**headers, **{k: str(uuid.uuid4()) for k in ids}}
    no_id = {k: v for k, v in headers.items() if k not in ids}
    for replay in (fresh_id, no_id):
        again = web.post("/hooks/app", body=body, headers=replay)
        assert again.status == 200, again
        assert again.json()["builds"] == [build_id]
        assert f"app #1 (id {build_id})" in again.json()["skipped"]
        assert "retry" in again.json()["skipped"]
    assert len(home.builds()) == 1
    # A person rebuilds with retry, and manual triggers of that commit are never skipped.
    assert web.post(f"/api/builds/{build_id}/retry").status == 201
    commit = home.build(build_id)["commit"]
    for _ in range(2):
        answer = web.post("/api/jobs/app/builds", json_body={"branch": "master", "commit": commit})
        assert answer.status == 201
    assert len(home.builds()) == 4


def test_the_same_commit_with_other_params_or_on_another_ref_is_another_push(web, home, app_job):
    def generic(data):
        body = json.dumps(data).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return web.post(
            "/hooks/app", body=body, headers={"X-Lightci-Signature-256": "sha256=" + signature}
        )

    sha = "4522cbcefc20728a5b72b3a86af35e608622c514"
    assert generic({"branch": "main", "commit": sha, "params": {"flavor": "qa"}}).status == 202
    assert generic({"branch": "main", "commit": sha, "params": {"flavor": "prod"}}).status == 202
    assert generic({"branch": "release", "commit": sha, "params": {"flavor": "qa"}}).status == 202
    assert generic({"branch": "main", "commit": sha, "params": {"flavor": "qa"}}).status == 200
    assert len(home.builds()) == 3


# -- item 13: Gitea and Forgejo in form mode sign the JSON --------------------------------


@pytest.mark.parametrize("forge", ["gitea", "forgejo"])
def test_a_gitea_or_forgejo_form_delivery_is_checked_over_the_json_it_signed(
    web, home, app_job, forge
):
    body, headers = real_delivery(forge, "push.json", as_form=True)
    assert body.startswith(b"payload=%7B")
    answer = web.post("/hooks/app", body=body, headers=headers)
    assert answer.status == 202, answer
    row = home.build(answer.json()["builds"][0])
    assert (row["branch"], row["commit"]) == ("master", "4522cbcefc20728a5b72b3a86af35e608622c514")
    body, headers = real_delivery(forge, "push.json", secret="not-the-secret", as_form=True)
    wrong = web.post("/hooks/app", body=body, headers=headers).json()["error"]
    assert "does not match the JSON payload" in wrong
    unsigned = {k: v for k, v in headers.items() if "Signature" not in k}
    missing = web.post("/hooks/app", body=body, headers=unsigned).json()["error"]
    assert missing.startswith("missing signature") and "does not match" not in missing
    assert len(home.builds()) == 1


# -- item 14: the README's generic-webhook example works as printed ------------------------


def test_the_readme_generic_webhook_example_works_as_printed(home, serve):
    if not (shutil.which("curl") and shutil.which("openssl")):
        pytest.skip("needs curl and openssl, as the README's example does")
    readme = (REPO / "README.md").read_text()
    section = readme.split("- **Anything else**", 1)[1].split("\nAnswers:", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("      ")]
    assert any(line.startswith("curl ") for line in lines), section
    home.job("hello", f'webhook_secret = "{SECRET}"\n', build="echo hello\n")
    server = serve()
    result = subprocess.run(
        ["bash", "-euc", "\n".join(lines)],
        env={**home.env, "S": server.url, "SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result
    [build_id] = json.loads(result.stdout)["builds"]
    assert home.build(build_id)["branch"] == "main"
