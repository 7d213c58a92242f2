"""Section 8's job.toml keys: what a job reports and to whom (`[forge]`, `[[notify]]`),
what runs after its stages (`after`), what it keeps (`artifacts`) and when it runs
by itself (`schedule`, `[[schedules]]`).

Only the validation lives here (jobs.py reads job.toml); the outbox decides
what each state change sends, the sender sends it, the scheduler fires schedules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lightci.errors import UserError, unknown_key

FORGE_KINDS = ("github", "gitea", "forgejo", "gitlab")
NOTIFY_ON = ("started", "success", "failure", "fixed", "cancelled", "always")
DEFAULT_CONTEXT = "lightci/{job}"
STAGE_NAME = re.compile(r"[A-Za-z0-9._-]+")  # a stage runs NAME.sh: letters, digits, . _ -
KEYS = ("forge", "notify", "schedule", "schedules", "after", "artifacts")  # section8's

Fail = Callable[[str, str], UserError]


def _url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://")) and " " not in value


def _words(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


FORGE_KEYS: dict[str, tuple[Callable[[Any], bool], str, Any]] = {
    "kind": (lambda v: v in FORGE_KINDS, f"one of {', '.join(FORGE_KINDS)}", ""),
    "api": (_url, 'a URL such as "https://git.example.com/api/v1"', None),
    "repo": (_words, 'owner/name (GitLab: a project id or path), such as "org/app"', None),
    # "": no Authorization header (a forge on a private network that needs none)
    "token": (_words, "the name of a secret in secrets.env, such as FORGE_TOKEN", ""),
    "context": (_words, 'a name such as "lightci/{job}"', DEFAULT_CONTEXT),
}


def section8(fail: Fail, data: dict[str, Any]) -> dict[str, Any]:
    """Take section 8's keys out of a job.toml's data, validated, as the Job's fields."""
    fields: dict[str, Any] = {
        "forge": forge(fail, data.pop("forge", None)),
        "notify": notify(fail, data.pop("notify", None)),
        "schedules": schedules(fail, data.pop("schedule", None), data.pop("schedules", None)),
    }
    for key in ("after", "artifacts"):
        value = data.pop(key, [])
        if not isinstance(value, list) or not all(_words(v) for v in value):
            raise fail(key, f"must be a list of {'stage names' if key == 'after' else 'globs'}")
        fields[key] = value
    for stage in fields["after"]:  # NAME.sh in the job's directory: never a path
        if not STAGE_NAME.fullmatch(stage):
            raise fail("after", f"{stage!r} is not a valid stage name")
    for pattern in fields["artifacts"]:
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise fail("artifacts", f"{pattern!r} must be a glob inside the workspace")
    return fields


def schedules(fail: Fail, crons: Any, tables: Any) -> list[dict[str, Any]]:
    """`schedule = ["0 3 * * *"]` and `[[schedules]]` (cron, branch, params), as one list."""
    if crons is not None and (not isinstance(crons, list) or not all(_words(c) for c in crons)):
        raise fail("schedule", 'must be a list of cron lines such as ["0 3 * * *"]')
    if tables is not None and (
        not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables)
    ):
        raise fail("schedules", "must be [[schedules]] tables with cron, branch, params")
    found = [{"cron": c, "branch": "", "params": {}} for c in crons or []]
    where = ["schedule"] * len(found)
    for i, table in enumerate(tables or [], 1):
        _unknown(fail, f"schedules #{i}", table, ("cron", "branch", "params"))
        if not _words(table.get("cron")):
            raise fail(f"schedules #{i}.cron", 'missing: a cron line such as "0 3 * * *"')
        if not isinstance(table.get("branch", ""), str):
            raise fail(f"schedules #{i}.branch", "must be a branch name")
        if not isinstance(table.get("params", {}), dict):
            raise fail(f"schedules #{i}.params", "must be a table of NAME = value")
        found.append({"branch": "", "params": {}, **table})
        where.append(f"schedules #{i}.cron")
    for entry, key in zip(found, where, strict=True):
        problem = cron_problem(entry["cron"])
        if problem:
            raise fail(key, f"{entry['cron']!r} is not a cron line: {problem}")
    return found


# minute, hour, day of month, month, day of week: (lowest, highest, names)
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, ("jan feb mar apr may jun jul aug sep oct nov dec").split()),
    ("weekday", 0, 7, "sun mon tue wed thu fri sat".split()),
)
_CRON_PART = re.compile(r"(\*|(\w+)(?:-(\w+))?)(?:/(\d+))?\Z")


def cron_problem(line: str) -> str:
    """What is wrong with a five-field cron line, or "" (checked without APScheduler,
    which `lightci trigger` does not load)."""
    fields = line.split()
    if len(fields) != 5:
        return "it needs five fields: minute hour day month weekday"
    for text, (name, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        for part in text.split(","):
            match = _CRON_PART.match(part)
            if not match:
                return f"{name} {part!r}"
            for value in match.group(2, 3):
                named = value is not None and value.lower() in names
                number = value is not None and value.isdigit() and low <= int(value) <= high
                if value is not None and not (named or number):
                    return f"{name} {value!r} is not in {low}-{high}"
            problem = _range_problem(name, match, low, high, names)
            if problem:  # APScheduler refuses it when the slot comes: say so now
                return f"{name} {part!r}: {problem}"
    return ""


def _range_problem(name: str, match: re.Match, low: int, high: int, names: list[str]) -> str:
    """What APScheduler's CronTrigger refuses only when the slot comes: a range that runs
    backwards (a weekday range may not wrap: "fri-mon"), a step of 0 or one longer than
    its range, a month range of a name and a number. (cron.aps_weekdays spells weekdays
    out for it, so a weekday's long step is only odd, not refused.)"""
    ends = [v for v in match.group(2, 3) if v is not None]
    if name == "month" and len(ends) == 2 and ends[0].isdigit() != ends[1].isdigit():
        return "a range of a name and a number: use names or numbers at both ends"
    first, last = (_cron_value(v, low, names) for v in match.group(2, 3))
    if first is not None and last is not None and first > last:
        return f"a range runs from low to high ({first} > {last})"
    step = match.group(4)
    if step is None:
        return ""
    span = (high if last is None else last) - (low if first is None else first)
    if int(step) == 0 or (int(step) > span and name != "weekday"):
        return f"a step of {int(step)} in a range of {span}"
    return ""


def _cron_value(value: str | None, low: int, names: list[str]) -> int | None:
    if value is None:
        return None
    if value.lower() in names:  # jan is 1, sun is 0: their field's lowest value
        return names.index(value.lower()) + low
    return int(value)


def forge(fail: Fail, given: Any) -> dict[str, Any]:
    """[forge] with its defaults, or {} when the job reports no statuses."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise fail("forge", "must be a table: [forge] with kind, api, repo, token")
    _unknown(fail, "forge", given, FORGE_KEYS)
    table = {}
    if given.get("kind") == "github":
        given = {"api": "https://api.github.com", **given}
    for key, (check, desc, default) in FORGE_KEYS.items():
        if key not in given:
            if default is None:
                raise fail(f"forge.{key}", f"missing: must be {desc}")
            table[key] = default
        elif not check(given[key]):
            raise fail(f"forge.{key}", f"must be {desc}, got {given[key]!r}")
        else:
            table[key] = given[key]
    table["api"] = table["api"].rstrip("/")
    return table


def notify(fail: Fail, given: Any) -> list[dict[str, Any]]:
    """[[notify]] entries: `on` (default failure, fixed), a webhook URL and/or email addresses."""
    if given is None:
        return []
    if not isinstance(given, list) or not all(isinstance(n, dict) for n in given):
        raise fail("notify", "must be [[notify]] tables with on, webhook and/or email")
    entries = []
    for i, entry in enumerate(given, 1):
        where = f"notify #{i}"
        _unknown(fail, where, entry, ("on", "webhook", "email"))
        on = entry.get("on", ["failure", "fixed"])
        if not isinstance(on, list) or not on or any(v not in NOTIFY_ON for v in on):
            raise fail(f"{where}.on", f"must be a list of {', '.join(NOTIFY_ON)}, got {on!r}")
        webhook = entry.get("webhook", "")
        if webhook and not _url(webhook):
            raise fail(f"{where}.webhook", "must be an http(s) URL")
        email = entry.get("email", [])
        if isinstance(email, str):
            email = [email]
        if not isinstance(email, list) or not all(isinstance(a, str) and "@" in a for a in email):
            raise fail(
                f"{where}.email", 'must be a list of addresses, such as ["team@example.com"]'
            )
        if not webhook and not email:
            raise fail(where, "has neither webhook nor email: say where to send it")
        entries.append({"on": on, "webhook": webhook, "email": email})
    return entries


def _unknown(fail: Fail, section: str, given: dict, known) -> None:
    for key in given:
        if key not in known:
            raise fail(f"{section}.{key}", unknown_key(key, known))
