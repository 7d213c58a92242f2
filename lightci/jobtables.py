"""The tables of job.toml that hold settings of their own, [docker] and [deploy]:
each key with its check, what it must be (for the error message) and its default."""

from __future__ import annotations

from typing import Any

from lightci.errors import unknown_key
from lightci.release import repository_ok

DOCKER_CACHES = {
    "pub": "/root/.pub-cache",
    "pip": "/root/.cache/pip",
    "npm": "/root/.npm",
    "gradle": "/root/.gradle",
    "maven": "/root/.m2",
    "cargo": "/usr/local/cargo/registry",
}


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# key -> (type check, description for the error)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _isscalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


# [docker] and [deploy]: key -> (check, what it must be, default; None = required)
DOCKER_KEYS: dict[str, tuple[Any, str, Any]] = {
    "image": (lambda v: isinstance(v, str) and v.strip() != "", 'an image such as "node:20"', None),
    "caches": (
        lambda v: isinstance(v, list) and all(c in DOCKER_CACHES for c in v),
        f"a list of cache names ({', '.join(DOCKER_CACHES)})",
        [],
    ),
    # "" runs stages as lightci's own uid:gid; another user gets the files back after each stage.
    "user": (lambda v: isinstance(v, str), 'a user such as "root" or "1000:1000"', ""),
}
DEPLOY_KEYS: dict[str, tuple[Any, str, Any]] = {
    "dockerfile": (
        lambda v: isinstance(v, str) and v and not v.startswith("/") and ".." not in v.split("/"),
        "a path inside the workspace",
        "Dockerfile",
    ),
    "port": (lambda v: _is_int(v) and 0 < v < 65536, "a port number (1-65535)", 8080),
    "health": (
        lambda v: isinstance(v, str) and v.startswith("/"),
        'a path such as "/health"',
        "/health",
    ),
    "health_retries": (lambda v: _is_int(v) and v > 0, "a positive number of tries", 10),
    "health_interval": (lambda v: _is_number(v) and v > 0, "a positive number of seconds", 5),
    "health_timeout": (lambda v: _is_number(v) and v > 0, "a positive number of seconds", 5),
    "push": (repository_ok, 'a repository such as "registry.example.com/app"', ""),
    "drain": (lambda v: _is_number(v) and v >= 0, "a number of seconds (0 or more)", 5),
    "keep_images": (lambda v: _is_int(v) and v > 0, "a positive number of images", 5),
    "monitor_interval": (lambda v: _is_number(v) and v >= 0, "a number of seconds (0 = off)", 30),
    "restart_unhealthy": (lambda v: isinstance(v, bool), "true or false", False),
    "env": (
        lambda v: isinstance(v, dict) and all(_isscalar(x) for x in v.values()),
        "a table of NAME = value",
        {},
    ),
}


def table(fail, section: str, given: dict[str, Any] | None, spec) -> dict[str, Any]:
    """Validate [docker] or [deploy] and fill in the defaults; {} when the table is absent."""
    if given is None:
        return {}
    table = {}
    for key, value in given.items():
        if key not in spec:
            raise fail(f"{section}.{key}", unknown_key(key, spec))
        check, desc, _ = spec[key]
        if not check(value):
            raise fail(f"{section}.{key}", f"must be {desc}, got {value!r}")
    for key, (_, desc, default) in spec.items():
        if key not in given and default is None:
            raise fail(f"{section}.{key}", f"missing: must be {desc}")
        table[key] = given.get(key, default)
    if "env" in table:
        table["env"] = {k: scalar(v) for k, v in table["env"].items()}
    return table
