"""The outbox in this process: every state change that a job reports becomes a row in the
same transaction, and the sender delivers each row to the forge's API or a mail server.

The forge is the fake of test_statuses; the mail server is a real SMTP server
(aiosmtpd) on loopback.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import free_port
from tests.test_statuses import TOKEN, FakeForge, forge_toml, settings_for

SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


@pytest.fixture
def forge():
    fake = FakeForge()
    yield fake
    fake.server.shutdown()


def send_all(deadline: float = 30) -> None:
    """Run the sender until nothing is left to send now (what the scheduler does each second)."""
    from lightci import sender
    from lightci.models import Delivery

    end = time.time() + deadline
    while Delivery.select().where(Delivery.state.in_(sender.UNSENT)).exists():
        sender.send_due()
        assert time.time() < end, "deliveries still unsent"
        time.sleep(0.05)


def run_to(build_id: int, state: str) -> None:
    from lightci.claims import Lease, claim, release

    claimed = claim(Lease.mine())
    assert claimed is not None and claimed.build.id == build_id
    release(build_id, state, error=f"ended {state}")


def test_gitlab_statuses_name_gitlab_s_own_states(bound, home, forge):
    from lightci import builds
    from lightci.models import FAILED

    settings_for(home)
    home.job("app", forge_toml(forge, "gitlab").replace("octo/app", "group/app"), build="true\n")
    build = builds.trigger("app", branch="main", commit=SHA)
    run_to(build.id, FAILED)
    send_all()
    calls = forge.delivered("/statuses/")
    assert [c["json"]["state"] for c in calls] == ["pending", "running", "failed"]
    assert calls[0]["path"] == f"/api/v3/projects/group%2Fapp/statuses/{SHA}"
    assert (
        calls[0]["headers"]["private-token"] == TOKEN and calls[0]["json"]["name"] == "lightci/app"
    )
    assert {c["json"]["ref"] for c in calls} == {"main"}  # else GitLab guesses a branch, or 404s


def test_a_forge_without_a_token_gets_no_authorization_header(bound, home, forge):
    from lightci import builds

    settings_for(home)
    toml = f'[forge]\napi = "{forge.url}/api/v1"\nrepo = "org/app"\n'  # kind: the webhook's
    home.job("app", toml, build="true\n")
    builds.trigger("app", branch="main", commit=SHA, origin={"forge": "gitea"})
    send_all()
    [call] = forge.delivered("/statuses/")
    assert call["path"] == f"/api/v1/repos/org/app/statuses/{SHA}"
    assert "authorization" not in call["headers"] and call["json"]["state"] == "pending"


def test_every_final_state_is_reported_even_those_nobody_ran(bound, home, forge):
    """Cancelled in the queue, superseded, expired and lost all owe the forge an `error`."""
    from lightci import builds, recovery
    from lightci.claims import Lease, claim
    from lightci.config import settings
    from lightci.models import Build

    settings_for(home)
    home.job("app", 'supersede = "queued"\nqueue_timeout = 1\n' + forge_toml(forge), build="true\n")
    builds.trigger("app", branch="a", commit=SHA)  # superseded by the next
    cancelled = builds.trigger("app", branch="a", commit=SHA)  # supersedes the first
    builds.cancel(cancelled.id)
    lost = builds.trigger("app", branch="b", commit=SHA)
    claim(Lease("elsewhere", 1))
    assert recovery.end_lost(settings(), lost.id, "worker 1 died", Build.status == "running")
    expired = builds.trigger("app", branch="c", commit=SHA)
    Build.update(queued_at=time.time() - 10).where(Build.id == expired.id).execute()
    assert recovery.expire_queued() == [expired.id]
    send_all()
    finals = [c["json"] for c in forge.delivered("/statuses/") if c["json"]["state"] != "pending"]
    described = sorted(f["description"].split(":")[0].split(" in ")[0] for f in finals)
    assert described == [
        "app #1 cancelled",
        "app #2 cancelled",
        "app #3 lost",
        "app #4 expired",
    ]
    assert {f["state"] for f in finals} == {"error"}


def test_a_delivery_that_keeps_failing_is_given_up_with_the_forge_s_answer(bound, home, forge):
    from lightci import builds
    from lightci.models import Delivery

    settings_for(home, give_up_after=0)
    home.job("app", forge_toml(forge), build="true\n")
    forge.failing = -1
    build = builds.trigger("app", branch="main", commit=SHA)
    send_all()
    [row] = Delivery.select().where(Delivery.build == build.id)
    assert (row.state, row.tries) == ("failed", 1)
    assert row.answer == 'HTTP 500: {"message": "down"}'
    assert forge.url not in row.answer


def test_a_manual_build_reports_to_the_forge_the_job_s_webhooks_come_from(bound, home, forge):
    """[forge] without kind: "default: the webhook's forge". A build from the API or the CLI
    has no webhook; it sent GitHub's request to a GitLab API (404, retried for an hour)."""
    from lightci import builds
    from lightci.models import SUCCESS

    settings_for(home)
    home.job("app", forge_toml(forge).replace('kind = "github"\n', ""), build="true\n")
    hooked = builds.trigger("app", branch="main", commit=SHA, origin={"forge": "gitlab"})
    run_to(hooked.id, SUCCESS)
    other = "1" * 40
    manual = builds.trigger("app", branch="main", commit=other)
    run_to(manual.id, SUCCESS)
    send_all()
    assert {c["path"] for c in forge.delivered(f"/statuses/{other}")} == {
        f"/api/v3/projects/octo%2Fapp/statuses/{other}"
    }


def test_a_forge_that_refuses_the_request_itself_is_not_asked_again(bound, home, forge):
    """A 401 (a wrong token), 404 or 422 (GitHub's 1000 statuses) was retried for an hour,
    and the build's later statuses waited behind it."""
    from lightci import builds
    from lightci.models import SUCCESS, Delivery

    settings_for(home)
    home.job("app", forge_toml(forge), build="true\n")
    forge.failing, forge.failing_code = 1, 422
    build = builds.trigger("app", branch="main", commit=SHA)
    run_to(build.id, SUCCESS)
    send_all()
    rows = list(Delivery.select().where(Delivery.build == build.id).order_by(Delivery.id))
    assert [(r.state, r.tries) for r in rows] == [("failed", 1), ("sent", 1), ("sent", 1)]
    assert rows[0].answer.startswith("HTTP 422")
    assert forge.states(SHA) == ["pending", "success"]  # the queued one was refused


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


def test_failures_and_fixes_are_mailed_through_smtp(bound, home, forge):
    from lightci import builds
    from lightci.models import FAILED, SUCCESS

    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        settings_for(home)
        with open(home.path / "lightci.toml", "a") as f:
            f.write(f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nfrom = "ci@example.com"\n')
        home.job(
            "app",
            '[[notify]]\non = ["failure", "fixed"]\nemail = ["team@example.com"]\n',
            build="true\n",
        )
        for state in (SUCCESS, FAILED, FAILED, SUCCESS, SUCCESS):
            run_to(builds.trigger("app", branch="main").id, state)
        send_all()
    finally:
        smtp.stop()
    subjects = [
        next(x for x in text.splitlines() if x.startswith("Subject:")) for _, text in inbox.messages
    ]
    assert subjects == [
        "Subject: app #2 failed in 0 s: ended failed",
        "Subject: app #3 failed in 0 s: ended failed",
        "Subject: app #4 success in 0 s",
    ]
    assert all(to == ["team@example.com"] for to, _ in inbox.messages)
    for _, text in inbox.messages:  # RFC 5322 wants a Date; relays may not add one
        headers = text.split("\n\n", 1)[0]
        assert "\nDate: " in headers and "\nMessage-ID: <" in headers and "@example.com>" in headers
    assert "https://ci.example.com/builds/" in inbox.messages[2][1]


def test_a_home_from_before_pull_requests_gains_the_new_columns(home):
    home.job("app", build="true\n")
    first = home.trigger("app")
    db = sqlite3.connect(home.path / "lightci.db")
    for column in ("pr", "pr_base", "pr_ref", "fork", "tag", "forge"):
        db.execute(f'ALTER TABLE build DROP COLUMN "{column}"')
    db.execute("DROP TABLE delivery")
    db.execute("PRAGMA user_version = 0")  # as a version before the schema stamp left it
    db.commit()
    db.close()
    second = home.trigger("app")
    assert second == first + 1
    shown = home.cli("show", str(first), "--json").stdout
    assert '"pr": null' in shown and '"deliveries": []' in shown


def test_a_bad_forge_or_notify_table_names_the_file_the_key_and_the_fix(home):
    home.job("app", '[forge]\nkind = "gitea"\nrepo = "o/a"\n', build="true\n")
    result = home.cli("trigger", "app", check=False)
    assert result.returncode == 2 and "job.toml: forge.api: missing" in result.stderr
    home.job("app", '[[notify]]\non = ["failed"]\nwebhook = "https://x"\n', build="true\n")
    result = home.cli("trigger", "app", check=False)
    assert "notify #1.on: must be a list of started, success" in result.stderr


def test_a_status_waits_for_its_build_s_commit_without_using_up_tries(bound, home, forge):
    """A build queued with no commit (CLI, API, schedule): its `pending` waits for the
    checkout's commit at the first retry's pace, tries untouched; one that ended with no
    commit has nothing to report on and is done with at once, not retried for an hour."""
    from lightci import builds, sender
    from lightci.models import Build, Delivery

    settings_for(home)
    home.job("app", forge_toml(forge), build="true\n")
    waiting = builds.trigger("app", branch="main")
    for _ in range(3):
        Delivery.update(next_at=0).execute()
        sender.send_due()
    [row] = Delivery.select().where(Delivery.build == waiting.id)
    assert (row.tries, row.state) == (0, "pending") and "waiting for" in row.answer
    Build.update(commit=SHA).where(Build.id == waiting.id).execute()  # the checkout's
    Delivery.update(next_at=0).execute()
    send_all()
    assert [c["json"]["state"] for c in forge.delivered("/statuses/")] == ["pending"]
    never = builds.trigger("app", branch="other")
    builds.cancel(never.id)
    Delivery.update(next_at=0).execute()
    sender.send_due()
    states = {
        d.event: (d.state, d.tries) for d in Delivery.select().where(Delivery.build == never.id)
    }
    assert states == {"queued": ("failed", 1), "cancelled": ("failed", 1)}


def test_a_notification_carries_the_build_as_it_was_at_its_event(bound, home, forge):
    """Sent after the build ended, the 'started' webhook still shows it running."""
    from lightci import builds
    from lightci.models import FAILED

    settings_for(home)
    toml = f'[[notify]]\non = ["started", "always"]\nwebhook = "{forge.url}/chat/hook"\n'
    home.job("app", toml, build="true\n")
    build = builds.trigger("app", branch="main", commit=SHA)
    run_to(build.id, FAILED)  # both events recorded before anything is sent
    send_all()
    notes = [c["json"] for c in forge.delivered("/chat/")]
    assert [(n["text"].split()[2], n["build"]["status"]) for n in notes] == [
        ("running", "running"),
        ("failed", "failed"),
    ]
