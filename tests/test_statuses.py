"""Commit statuses and notifications through the outbox, against a fake forge on loopback.

The forge's status API is the one outside service a test cannot reach, so a
small HTTP server stands in for it: it records every call and fails on demand.
Everything else is real: `lightci serve`, its workers, a bare git repository
with a pull request's head on refs/pull/7/head only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import wait_until
from tests.test_prs import SECRET, delivery, payload

TOKEN = "tok-0123456789-forge"


class FakeForge:
    """Answers 201 to every POST and records it; `failing` status calls get 500 instead."""

    def __init__(self):
        self.calls: list[dict] = []
        self.failing = 0  # status calls still to fail; -1: all of them
        self.failing_code = 500  # how they fail
        forge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"{}")
                ok = forge.failing == 0 or "/statuses/" not in self.path
                if not ok and forge.failing > 0:
                    forge.failing -= 1
                forge.calls.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "json": body,
                        "ok": ok,
                    }
                )
                self.send_response(201 if ok else forge.failing_code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"message": "created"}' if ok else b'{"message": "down"}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self, path_part: str) -> list[dict]:
        return [c for c in self.calls if c["ok"] and path_part in c["path"]]

    def states(self, sha: str) -> list[str]:
        return [c["json"]["state"] for c in self.delivered(f"/statuses/{sha}")]


@pytest.fixture
def forge():
    fake = FakeForge()
    yield fake
    fake.server.shutdown()


def git(*args, cwd=None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def settings_for(home, **deliveries) -> None:
    values = {"first_retry": 1, "timeout": 2, **deliveries}
    with open(home.path / "lightci.toml", "a") as f:
        f.write('[server]\nurl = "https://ci.example.com/"\n[deliveries]\n')
        f.write("".join(f"{k} = {v}\n" for k, v in values.items()))
    secrets = home.path / "secrets.env"
    secrets.write_text(f"FORGE_TOKEN={TOKEN}\nDEPLOY_KEY=deploy-key-value\n")
    secrets.chmod(0o600)


def forge_toml(forge: FakeForge, kind: str = "github") -> str:
    return (
        f'[forge]\nkind = "{kind}"\napi = "{forge.url}/api/v3"\nrepo = "octo/app"\n'
        'token = "FORGE_TOKEN"\n'
    )


def test_a_pull_request_s_statuses_and_notifications_reach_the_forge_in_order(
    home, serve, forge, tmp_path
):
    bare, work = tmp_path / "app.git", tmp_path / "work"
    git("init", "--quiet", "--bare", "--initial-branch=master", str(bare))
    git("clone", "--quiet", str(bare), str(work))
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "--allow-empty",
        "-qm",
        "base",
        cwd=work,
    )
    git("push", "--quiet", "origin", "HEAD:master", cwd=work)
    (work / "fail").write_text("this commit fails its build\n")
    git("add", "fail", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "breaks", cwd=work)
    broken = git("rev-parse", "HEAD", cwd=work)
    git("push", "--quiet", "origin", "HEAD:refs/pull/7/head", cwd=work)  # on no branch
    git("rm", "-q", "fail", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fixes", cwd=work)
    fixed = git("rev-parse", "HEAD", cwd=work)
    git("push", "--quiet", "--force", "origin", "HEAD:refs/pull/7/head", cwd=work)

    settings_for(home)
    chat = f"{forge.url}/chat/hooks/very-secret-path"
    home.job(
        "app",
        f'webhook_secret = "{SECRET}"\nrepo = "{bare}"\npull_requests = true\n'
        'key = "pr{pr}"\nsecrets = ["DEPLOY_KEY"]\n'
        + forge_toml(forge)
        + f'[[notify]]\non = ["failure", "fixed"]\nwebhook = "{chat}"\n',
        build='echo "pr=$LIGHTCI_PR base=$LIGHTCI_PR_BASE branch=$LIGHTCI_BRANCH '
        'secret=${DEPLOY_KEY:-none}"\ntest ! -f fail\n',
    )
    forge.failing = 2  # the forge is down for the first two calls
    server = serve()

    opened = payload("github", "pull_request-opened.json")
    opened["number"] = opened["pull_request"]["number"] = 7
    opened["pull_request"]["head"]["sha"] = broken
    opened["pull_request"]["head"]["repo"]["id"] = 4242  # a fork's
    body, headers = delivery("github", "pull_request-opened.json", opened)
    answer = server.post("/hooks/app", body, headers=headers)
    assert answer.status == 202, answer
    [first] = answer.json()["builds"]
    assert home.wait_for([first])[0]["status"] == "failed"
    log = home.log(first)
    assert "pr=7 base=master branch=changes secret=none" in log  # a fork's PR: no secret

    wait_until(lambda: len(forge.states(broken)) == 3, "three statuses of the broken build")
    assert forge.states(broken) == ["pending", "pending", "failure"]
    call = forge.delivered(f"/statuses/{broken}")[-1]
    assert call["path"] == f"/api/v3/repos/octo/app/statuses/{broken}"
    assert call["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert call["json"]["target_url"] == f"https://ci.example.com/builds/{first}"
    assert call["json"]["context"] == "lightci/app" and "failed" in call["json"]["description"]
    wait_until(lambda: forge.delivered("/chat/"), "the failure's notification")
    note = forge.delivered("/chat/")[0]["json"]
    assert "app #1 failed" in note["text"] and note["build"]["id"] == first

    sync = payload("github", "pull_request-synchronize.json")
    sync["number"] = sync["pull_request"]["number"] = 7
    sync["pull_request"]["head"]["sha"] = fixed
    body, headers = delivery("github", "pull_request-synchronize.json", sync)
    [second] = server.post("/hooks/app", body, headers=headers).json()["builds"]
    assert home.wait_for([second])[0]["status"] == "success"
    assert "pr=7 base=master branch=changes secret=***" in home.log(second)  # masked
    wait_until(lambda: len(forge.states(fixed)) == 3, "three statuses of the fixed build")
    assert forge.states(fixed) == ["pending", "pending", "success"]
    wait_until(lambda: len(forge.delivered("/chat/")) == 2, "the fix's notification")
    assert "app #2 success" in forge.delivered("/chat/")[1]["json"]["text"]

    shown = server.get(f"/api/builds/{first}").json()["deliveries"]
    assert [(d["kind"], d["event"], d["state"]) for d in shown] == [
        ("status", "queued", "sent"),
        ("status", "running", "sent"),
        ("status", "failed", "sent"),
        ("webhook", "failed", "sent"),
    ]
    assert shown[0]["tries"] == 3 and shown[0]["answer"].startswith("HTTP 201")
    page = server.get(f"/builds/{first}").text
    assert 'id="deliveries"' in page and "notify #1 webhook" in page
    for where in (page, json.dumps(shown), log, (home.path / "serve.log").read_text()):
        assert TOKEN not in where and "very-secret-path" not in where and forge.url not in where


def test_deliveries_pending_at_a_crash_are_each_made_once_after_a_restart(home, serve, forge):
    settings_for(home)
    home.job("app", 'key = "{commit}"\n' + forge_toml(forge, "gitea"), build="true\n")
    forge.failing = -1
    server = serve()
    shas = [f"{n:040x}" for n in range(1, 4)]
    ids = [home.trigger("app", "--commit", sha) for sha in shas]
    assert {b["status"] for b in home.wait_for(ids)} == {"success"}
    wait_until(lambda: len(forge.calls) >= 3, "the forge to be tried")
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    forge.failing = 0
    serve()
    for sha in shas:
        wait_until(lambda sha=sha: len(forge.states(sha)) == 3, f"the statuses of {sha[-1]}")
    for sha in shas:
        assert forge.states(sha) == ["pending", "pending", "success"]
        assert forge.delivered(sha)[0]["headers"]["authorization"] == f"token {TOKEN}"
    # The forge answered before the sender wrote "sent": wait for the rows, then count them.
    states = "SELECT state, COUNT(*) FROM delivery GROUP BY state"
    wait_until(
        lambda: [tuple(r) for r in home.db().execute(states).fetchall()] == [("sent", 9)],
        "every delivery marked sent once",
    )


ALL_FORGES = [
    ("github", "push-branch.json"),
    ("github", "pull_request-opened.json"),
    ("gitea", "push.json"),
    ("gitea", "pull_request-opened.json"),
    ("gitlab", "push.json"),
    ("gitlab", "merge_request-opened.json"),
]


def test_the_split_processes_report_each_forge_s_builds_in_its_own_api(
    home, serve, forge, scheduler
):
    """`lightci web`, a worker and `lightci scheduler` (the Procfile), real payloads of all
    three forges, one job whose [forge] kind is the webhook's: one sequence per build."""
    settings_for(home)
    home.job(
        "app",
        f'webhook_secret = "{SECRET}"\npull_requests = true\nkey = "{{branch}}-{{pr}}-{{commit}}"\n'
        f'[forge]\napi = "{forge.url}/api"\nrepo = "org/app"\ntoken = "FORGE_TOKEN"\n',
        build="true\n",
    )
    server = serve(web=True)
    home.start_worker()
    sent = {}
    for name, file in ALL_FORGES:
        body, headers = delivery(name, file)
        answer = server.post("/hooks/app", body, headers=headers)
        assert answer.status == 202, (file, answer)
        sent[answer.json()["builds"][0]] = name
    rows = home.wait_for(list(sent))
    assert {row["status"] for row in rows} == {"success"}
    expected = {"gitlab": ["pending", "running", "success"]}
    for row in rows:
        kind = sent[row["id"]]
        wanted = expected.get(kind, ["pending", "pending", "success"])
        wait_until(lambda row=row, w=wanted: forge.states(row["commit"]) == w, f"{kind} statuses")
        path = forge.delivered(row["commit"])[0]["path"]
        if kind == "gitlab":
            assert path == f"/api/projects/org%2Fapp/statuses/{row['commit']}"
        else:
            assert path == f"/api/repos/org/app/statuses/{row['commit']}"


def test_with_no_server_url_links_point_where_serve_listens(home, serve, forge):
    """`serve --port P` with no [server] url: links said lightci.toml's port, 8080."""
    secrets = home.path / "secrets.env"
    secrets.write_text(f"FORGE_TOKEN={TOKEN}\n")
    secrets.chmod(0o600)
    home.job("app", forge_toml(forge), build="true\n")
    server = serve()
    build_id = server.post("/api/jobs/app/builds", b'{"commit": "' + b"a" * 40 + b'"}').json()["id"]
    wait_until(lambda: forge.states("a" * 40)[-1:] == ["success"], "the final status")
    targets = {c["json"]["target_url"] for c in forge.delivered("/statuses/")}
    assert targets == {f"{server.url}/builds/{build_id}"}
