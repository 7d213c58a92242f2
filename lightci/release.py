"""job.toml's release keys: [[images]] (component images) and [gitops] (a deployment-repo bump).

Validated here, below lightci.jobs, so every error names the file, the key and the fix.
"""

from __future__ import annotations

import re
import string
from typing import Any

COMPONENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
# A Docker repository: [registry[:port]/]path, its parts lowercase (distribution's grammar);
# checked at load, where "Not A Repo!!" would fail only at the push.
_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_PART}(?:/{_PART})*\Z")


def repository_ok(value: Any) -> bool:
    """ "" (no push) or a repository name Docker takes."""
    return isinstance(value, str) and (value == "" or bool(REPOSITORY.match(value)))


IMAGE_FIELDS = ("component", "sha8", "branch", "number", "job", "commit")
TAG_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
# {tag:core} and {image:core} name a component; the rest are the build's own values.
GITOPS_FIELDS = ("sha8", "branch", "number", "job", "commit", "components", "tag", "image")


def _path_ok(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value != ""
        and not value.startswith("/")
        and (".." not in value.split("/"))
    )


IMAGE_KEYS: dict[str, tuple[Any, str, Any]] = {
    "component": (
        lambda v: isinstance(v, str) and COMPONENT.match(v),
        'a lowercase name such as "core"',
        None,
    ),
    "dockerfile": (_path_ok, "a path inside the workspace", None),
    "context": (_path_ok, 'a directory inside the workspace, such as "."', "."),
    "tag": (
        lambda v: isinstance(v, str) and v != "",
        'a template such as "{component}-stage-{sha8}"',
        "{component}-{sha8}",
    ),
    "push": (repository_ok, 'a repository such as "registry.example.com/org/app"', ""),
}
GITOPS_KEYS: dict[str, tuple[Any, str, Any]] = {
    "repo": (lambda v: isinstance(v, str) and v.strip() != "", "a git URL or path", None),
    "branch": (
        lambda v: isinstance(v, str) and v != "" and not v.startswith("-"),
        "a branch name",
        "main",
    ),
    "file": (_path_ok, "a path inside the deployment repository", "values.yaml"),
    "set": (
        lambda v: isinstance(v, dict) and v and all(isinstance(x, str) for x in v.values()),
        'a table of "yaml.path" = "value template", such as { "core.image.tag" = "{tag:core}" }',
        None,
    ),
    "message": (
        lambda v: isinstance(v, str) and v != "",
        "a template string",
        "{job} #{number}: {components} -> {sha8}",
    ),
    # The name of a secret in secrets.env: sent as HTTP basic auth for an https repo.
    "token": (lambda v: isinstance(v, str), 'the name of a secret, such as "DEPLOY_TOKEN"', ""),
    "author": (
        lambda v: isinstance(v, str) and re.fullmatch(r"[^<>]+ <[^<>]*>", v) is not None,
        'a git author such as "lightci <ci@example.com>"',
        "lightci <lightci@localhost>",
    ),
}


def _table(fail, section: str, given: dict[str, Any], spec) -> dict[str, Any]:
    for key, value in given.items():
        if key not in spec:
            raise fail(f"{section}.{key}", f"unknown key (known: {', '.join(spec)})")
        check, desc, _ = spec[key]
        if not check(value):
            raise fail(f"{section}.{key}", f"must be {desc}, got {value!r}")
    table = {}
    for key, (_, desc, default) in spec.items():
        if key not in given and default is None:
            raise fail(f"{section}.{key}", f"missing: must be {desc}")
        table[key] = given.get(key, default)
    return table


def _fields(template: str) -> list[tuple[str, str]]:
    """(name, argument) of each {name} or {name:argument} in a template; ValueError if bad."""
    found = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if conv:
            raise ValueError(f"no conversions: {{{name}!{conv}}}")
        found.append((name, spec or ""))
    return found


def images(fail, given: Any) -> list[dict[str, Any]]:
    """[[images]]: a list of tables, components unique, tag templates with known fields."""
    if given is None:
        return []
    if not isinstance(given, list) or not all(isinstance(t, dict) for t in given):
        raise fail(
            "images", "must be [[images]] tables (component, dockerfile, context, tag, push)"
        )
    out, seen = [], set()
    for index, table in enumerate(given):
        image = _table(fail, f"images[{index}]", table, IMAGE_KEYS)
        if image["component"] in seen:
            raise fail(f"images[{index}].component", f"{image['component']!r} is listed twice")
        seen.add(image["component"])
        try:
            names = [name for name, _ in _fields(image["tag"])]
        except ValueError as exc:
            raise fail(f"images[{index}].tag", f"bad template {image['tag']!r}: {exc}") from None
        unknown = [n for n in names if n not in IMAGE_FIELDS]
        if unknown:
            raise fail(
                f"images[{index}].tag",
                f"unknown field {{{unknown[0]}}} (known: {', '.join(IMAGE_FIELDS)})",
            )
        out.append(image)
    return out


def gitops(fail, given: Any, components: list[str]) -> dict[str, Any]:
    """[gitops]: {tag:X} and {image:X} must name a component of [[images]]."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise fail("gitops", "must be a table (repo, branch, file, set, message, author)")
    table = _table(fail, "gitops", given, GITOPS_KEYS)
    templates = {f"gitops.set.{k}": v for k, v in table["set"].items()}
    templates["gitops.message"] = table["message"]
    for where, template in templates.items():
        try:
            fields = _fields(template)
        except ValueError as exc:
            raise fail(where, f"bad template {template!r}: {exc}") from None
        for name, arg in fields:
            if name not in GITOPS_FIELDS:
                raise fail(where, f"unknown field {{{name}}} (known: {', '.join(GITOPS_FIELDS)})")
            if name in ("tag", "image") and arg not in components:
                known = ", ".join(components) or "none: add [[images]]"
                raise fail(where, f"{{{name}:{arg}}} names no [[images]] component ({known})")
    for path in table["set"]:
        if any(part == "" for part in path.split(".")):
            raise fail(f"gitops.set.{path}", 'must be a dotted path such as "core.image.tag"')
    return table


def tag_value(text: str) -> str:
    """A rendered value made into a valid image tag: 'feature/x' -> 'feature-x'."""
    return TAG_CHARS.sub("-", text).lstrip(".-")[:128] or "latest"
