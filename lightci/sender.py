"""The sender: delivers the outbox's commit statuses and notifications, with retries.

It runs in the scheduler process (``lightci scheduler`` or ``lightci serve``),
never in a webhook request or a claim, so a slow forge slows nothing but
itself. A row is taken by moving its ``next_at`` past a lease, so two senders
never send one row; a sender killed mid-send leaves the row to be taken again
once the lease ends. Rows of one build and target go in order: a ``pending``
that is still retrying holds back the ``success`` after it.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import urllib.error
from urllib.parse import quote, urlsplit

from lightci import claims
from lightci.config import Settings, settings
from lightci.errors import UserError
from lightci.models import FINAL, SUCCESS, Build, Delivery, as_dict, run_sql, sql_list
from lightci.secretfile import read_secrets

log = logging.getLogger(__name__)

PENDING, RETRYING, SENT, FAILED = "pending", "retrying", "sent", "failed"
UNSENT = (PENDING, RETRYING)
BATCH = 20
# Seconds the scheduler waits at most between looks at an empty outbox while
# builds are about: rows are written by other processes too (a claim, a release).
LONGEST = 5.0
ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")  # an e-mail address, in a server's words
# A build state as each forge's status API names it.
GITHUB_STATES = {"queued": "pending", "running": "pending", SUCCESS: "success", "failed": "failure"}
GITLAB_STATES = {"queued": "pending", "running": "running", SUCCESS: "success", "failed": "failed"}


class Later(Exception):
    """Not sendable yet (a missing secret): try again, it counts as a try."""


class NoCommitYet(Exception):
    """A status of a build whose checkout has not named its commit: it waits for it without
    using up tries or backing off, and holds back the build's later statuses meanwhile."""


class Pointless(Exception):
    """Never sendable (a build that ended with no commit has nothing to report on)."""


def send_due() -> float | None:
    """Send the due rows (a batch at a time); returns when the next unsent row is due.

    The scheduler runs it again then (lightci.schedule paced), so an empty
    outbox costs one indexed look per wait, not a query every second.
    """
    upcoming = next_due()
    if upcoming is None:  # nothing to send; None (rest) unless a build may record more
        return None if claims.at_rest() else time.time() + LONGEST
    if upcoming > time.time():
        return upcoming
    _send_batch()
    return next_due()


def due() -> bool:
    """The resting sender's look (lightci.schedule): rows to send, or builds about."""
    return next_due() is not None or not claims.at_rest()


_NEXT_DUE = f"SELECT MIN(next_at) FROM delivery WHERE state IN {sql_list(UNSENT)}"


def next_due() -> float | None:
    """When the earliest unsent row is due (a row taken by a sender: when its lease ends)."""
    row = run_sql(_NEXT_DUE).fetchone()
    return row[0] if row else None


def _send_batch() -> int:
    sent = 0
    now = time.time()
    due = (
        Delivery.select()
        .where(Delivery.state.in_(UNSENT), Delivery.next_at <= now)
        .order_by(Delivery.id)
        .limit(BATCH)
    )
    lease = settings()["deliveries"]["timeout"] * 3  # a taken row is left to its sender
    for row in list(due):
        if _held_back(row) or not _take(row, now + lease):
            continue
        sent += _send(row)
    return sent


def _held_back(row: Delivery) -> bool:
    return (
        Delivery.select()
        .where(
            Delivery.build == row.build_id,
            Delivery.kind == row.kind,
            Delivery.target == row.target,
            Delivery.id < row.id,
            Delivery.state.in_(UNSENT),
        )
        .exists()
    )


def _take(row: Delivery, until: float) -> bool:
    return (
        Delivery.update(next_at=until)
        .where(Delivery.id == row.id, Delivery.next_at == row.next_at, Delivery.state.in_(UNSENT))
        .execute()
        == 1
    )


def _send(row: Delivery) -> int:
    cfg = settings()
    build = Build.get_or_none(Build.id == row.build_id)
    if build is None:
        return 0
    body = json.loads(row.body)
    try:
        if row.kind == "status":
            answer = _status(cfg, build, row.event, body)
        elif row.kind == "webhook":
            answer = _webhook(cfg, build, row.event, body)
        else:
            answer = _email(cfg, build, row.event, body)
    except NoCommitYet as exc:  # not a failure: it looks again soon, tries untouched
        wait = cfg["deliveries"]["first_retry"]
        Delivery.update(next_at=time.time() + wait, answer=str(exc)).where(
            Delivery.id == row.id
        ).execute()
        return 0
    except Pointless as exc:
        Delivery.update(state=FAILED, tries=row.tries + 1, answer=str(exc)).where(
            Delivery.id == row.id
        ).execute()
        return 0
    except urllib.error.HTTPError as exc:
        if not _lasting(exc):
            _retry(cfg, row, _words(exc, body))
            return 0
        # A wrong token or repo, GitHub's 1000 statuses of a commit: no try will pass, and
        # the build's later statuses wait behind this one. It fails now, and says why.
        Delivery.update(state=FAILED, tries=row.tries + 1, answer=_words(exc, body)).where(
            Delivery.id == row.id
        ).execute()
        return 0
    except Exception as exc:  # every failure is the row's answer, never the sender's end
        _retry(cfg, row, _words(exc, body))
        return 0
    Delivery.update(state=SENT, tries=row.tries + 1, sent_at=time.time(), answer=answer).where(
        Delivery.id == row.id
    ).execute()
    return 1


def _lasting(exc: urllib.error.HTTPError) -> bool:
    """A 4xx that says the request itself is wrong (not a timeout, a conflict, a rate limit:
    GitHub's secondary limit is a 403 with Retry-After or no requests remaining)."""
    if not 400 <= exc.code < 500 or exc.code in (408, 409, 425, 429):
        return False
    headers = exc.headers or {}
    limited = headers.get("Retry-After") or headers.get("X-RateLimit-Remaining") == "0"
    return not (exc.code == 403 and limited)


def _retry(cfg: Settings, row: Delivery, answer: str) -> None:
    tries = row.tries + 1
    delay = min(cfg["deliveries"]["first_retry"] * 2 ** (tries - 1), 900)
    now = time.time()
    gave_up = now + delay > row.created_at + cfg["deliveries"]["give_up_after"]
    log.warning("delivery %s (%s) try %s: %s", row.id, row.target, tries, answer)
    Delivery.update(
        state=FAILED if gave_up else RETRYING, tries=tries, next_at=now + delay, answer=answer
    ).where(Delivery.id == row.id).execute()


def _words(exc: Exception, body: dict) -> str:
    """The failure as people may see it: no URL, no address, no token in it."""
    if isinstance(exc, urllib.error.HTTPError):
        try:
            said = exc.read(300).decode("utf-8", "replace")
        except Exception:  # an answer without a body
            said = exc.reason or ""
        text = f"HTTP {exc.code}: {said}"
    elif isinstance(exc, Later | UserError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
    hidden = [body.get("secret"), *body.get("to", [])]
    for url in (body.get("url"), body.get("api")):
        if url:  # a server may echo the path ("Cannot POST /hooks/T0/B0/secret") or the query
            parts = urlsplit(url)
            hidden += [url, parts.query, parts.netloc.rpartition("@")[0]]
            hidden += [parts.path] if len(parts.path) > 1 else []
    for secret in sorted(filter(None, hidden), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = ADDRESS.sub("***", text)  # an SMTP refusal names addresses; none may show
    return " ".join(text.split())[:500]


served_at: list[str] = []  # where this process's web server listens (`serve --port`)


def link(cfg: Settings, build: Build) -> str:
    """[server] url, else where this process serves, else lightci.toml's host and port."""
    here = served_at[0] if served_at else ""
    base = cfg["server"]["url"] or here or f"http://{cfg['server']['host']}:{cfg['server']['port']}"
    return f"{base.rstrip('/')}/builds/{build.id}"


def summary(build: Build, event: str) -> str:
    text = f"{build.label()} {event}"
    if event in FINAL and build.duration is not None:
        text += f" in {build.duration:.0f} s"
    if build.error and event in FINAL and event != SUCCESS:
        text += f": {build.error}"
    return text[:140]


def _status(cfg: Settings, build: Build, event: str, body: dict) -> str:
    if not build.commit:
        if build.is_final:
            raise Pointless("the build ended with no commit to report on")
        raise NoCommitYet("waiting for the build's commit (its checkout)")
    token = read_secrets(cfg.secrets_file).get(body["token"]) if body["token"] else ""
    if body["token"] and not token:
        raise Later(f"secret {body['token']} is not in secrets.env ([forge] token)")
    body["secret"] = token
    payload = {
        "target_url": link(cfg, build),
        "description": summary(build, event),
    }
    if body["kind"] == "gitlab":
        state = GITLAB_STATES.get(event, "canceled" if event == "cancelled" else "failed")
        url = f"{body['api']}/projects/{quote(body['repo'], safe='')}/statuses/{build.commit}"
        payload.update(state=state, name=body["context"])
        # Without a ref GitLab picks a branch that holds the commit, and a fork's merge
        # request's head is on none of the project's: 404.
        ref = build.tag or (build.pr_ref if build.fork else build.branch)
        payload.update({"ref": ref} if ref else {})
        headers = {"PRIVATE-TOKEN": token} if token else {}
    else:
        state = GITHUB_STATES.get(event, "error")
        url = f"{body['api']}/repos/{body['repo']}/statuses/{build.commit}"
        payload.update(state=state, context=body["context"])
        scheme = "Bearer" if body["kind"] == "github" else "token"
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"{scheme} {token}"
    return _post(cfg, url, payload, headers) + f" ({state})"


def _webhook(cfg: Settings, build: Build, event: str, body: dict) -> str:
    text = f"{summary(build, event)} {link(cfg, build)}"
    snapshot = body.get("build") or as_dict(build)  # rows from before snapshots: as it is
    return _post(cfg, body["url"], {"text": text, "build": snapshot}, {})


def _email(cfg: Settings, build: Build, event: str, body: dict) -> str:
    smtp = cfg["smtp"]
    if not smtp["host"]:
        raise Later("[smtp] host is not set in lightci.toml")
    # Loaded by the first mail: with ssl and email, ~2 MB a process that mails nothing
    # does without (smtplib and urllib.request: tests/test_shape.py's DEFERRED).
    import smtplib
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    message = EmailMessage()
    message["Subject"] = summary(build, event)
    message["From"] = smtp["from"] or "lightci@localhost"
    message["To"] = ", ".join(body["to"])
    message["Date"] = formatdate(usegmt=True)  # RFC 5322 wants both; a relay may not add them
    sender = (smtp["from"] or "lightci@localhost").rstrip(">").rpartition("@")[2]
    message["Message-ID"] = make_msgid(domain=sender or "localhost")
    message.set_content(f"{summary(build, event)}\n\n{link(cfg, build)}\n")
    with smtplib.SMTP(smtp["host"], smtp["port"], timeout=cfg["deliveries"]["timeout"]) as mail:
        if smtp["starttls"]:
            mail.starttls()
        if smtp["user"]:
            password = read_secrets(cfg.secrets_file).get(smtp["password"], "")
            mail.login(smtp["user"], password)
        mail.send_message(message)
    return f"mailed {len(body['to'])} address(es)"


@functools.cache
def _opener():
    """urllib's opener, but a redirect is an answer, not a place to send the token to.
    Made by the first delivery that posts: see _email for why only then."""
    import urllib.request

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    return urllib.request.build_opener(Stay)


def _post(cfg: Settings, url: str, payload: dict, headers: dict) -> str:
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={**headers, "Content-Type": "application/json", "User-Agent": "lightci"},
        method="POST",
    )
    with _opener().open(request, timeout=cfg["deliveries"]["timeout"]) as answer:
        return f"HTTP {answer.status}"
