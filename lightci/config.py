"""The home directory, lightci.toml and its LIGHTCI_<SECTION>_<NAME> overrides.

Every process calls ``settings()`` when it needs a value; the file is re-read
when its mtime or size changes, so a new ``slots`` applies to the next claim
without a restart.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightci.errors import UserError
from lightci.homes import resolve_home

log = logging.getLogger(__name__)

DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "host": "127.0.0.1",
        "port": 8080,
        "token": "",
        "public": True,
        "max_body": 25 * 1024 * 1024,  # bytes; larger webhook bodies get 413
        "max_queued": 1000,  # webhooks answer 429 past this many queued builds
        "threads": 32,  # waitress threads; each live log (SSE) holds one
        "trusted_proxy": "",  # the one address whose X-Forwarded-Proto/Host/For count
        "apps_port": 0,  # the apps' own listener (their own origin); 0 = off
        "apps_host": "",  # "" = the same as host
        "url": "",  # the public base for links in statuses and notifications
    },
    "builds": {
        "slots": 2,
        "queue_timeout": 600,
        "timeout": 3600,
        "retention_days": 7,
        "keep_last": 20,
        "orphan_after": 30,
        "kill_grace": 5,  # seconds between TERM and KILL of a build's process group
        "stop_grace": 30,  # seconds a stopping worker gives its running builds
        "pass_env": ["PATH", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "SHELL", "TERM"],
        "sandbox": "auto",  # host stages in bubblewrap: "auto" (when it works), "bwrap", "none"
        # Admission by memory (lightci.admission): "auto" = the machine's memory minus
        # memory_reserve, a size ("12G"), or "" (off: slots alone decide)
        "memory_budget": "auto",
        "memory_reserve": "1G",
        "memory_default": "1G",  # expected peak of a key with no history and no job `memory`
        "starve_after": 600,  # seconds after which nothing passes the oldest runnable build
    },
    "webhooks": {"secret": ""},
    "upkeep": {
        "sweep_interval": 5,  # seconds between orphan / expiry / re-dispatch sweeps
        "retention_at": "03:00",  # local time of the daily retention run
        "disk_warn_mb": 2048,  # free space under this is a warning
    },
    "database": {"url": ""},  # "" = SQLite at HOME/lightci.db; postgresql://... later
    "queue": {"url": ""},  # "" = SQLite at HOME/huey.db; redis://... later
    "registry": {"user": "", "password": ""},  # [[images]] pushes; password: a secret's name
    "targets": {  # delivery targets (lightci.delivery); 0 = no target
        "window_days": 30,
        "build_success": 95,  # percent
        "deploy_success": 99,  # percent
        "lead_time": 600,  # seconds, p95 of push to deployed
        "queue_wait": 0,  # seconds, mean
    },
    # Mail for [[notify]] email; password names a secret in secrets.env.
    "smtp": {"host": "", "port": 25, "user": "", "password": "", "from": "", "starttls": False},
    # The outbox (statuses, notifications): the first retry after first_retry
    # seconds, doubling, until give_up_after seconds after the state change.
    "deliveries": {"first_retry": 5, "give_up_after": 3600, "timeout": 10},
}

TOP_LEVEL = {"jobs_dir": ""}
SANDBOXES = ("auto", "bwrap", "none")
MIN_MEMORY = 6 * 1024**2  # Docker's least limit; a build given less cannot start
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\Z", re.I)
# [builds]' sizes: the words each may be instead, and whether it is at least MIN_MEMORY
SIZES = {"memory_budget": (("auto", ""), True), "memory_reserve": (("",), False)}
SIZES["memory_default"] = ((), True)


def parse_memory(text: str) -> int:
    """'3G' -> bytes. Raises ValueError on anything else."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise ValueError(text)
    number, unit = match.groups()
    try:
        return int(float(number) * 1024 ** "BKMGT".index(unit.upper() or "B"))
    except OverflowError:  # more digits than a float holds
        raise ValueError(text) from None


def size_at_least(text: str, smallest: int) -> bool:
    """A size parse_memory reads, of at least `smallest` bytes."""
    try:
        return parse_memory(text) >= smallest
    except ValueError:
        return False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Give a value from TOML or the environment the type of its default."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif isinstance(default, list):
        if isinstance(value, list):
            return [str(v) for v in value]
        if isinstance(value, str):
            return [v for v in value.replace(",", " ").split() if v]
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    kind = type(default).__name__
    raise UserError(f"{where}: expected {kind}, got {value!r}")


@dataclass
class Settings:
    """One reading of lightci.toml plus the environment."""

    home: Path
    values: dict[str, dict[str, Any]]
    jobs_dir: Path
    stamp: tuple = field(default=(), repr=False)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    @property
    def slots(self) -> int:
        return self.values["builds"]["slots"]

    @property
    def token(self) -> str:
        return os.environ.get("LIGHTCI_TOKEN") or self.values["server"]["token"]

    # The home's layout, in one place.
    @property
    def db_file(self) -> Path:
        return self.home / "lightci.db"

    @property
    def queue_file(self) -> Path:
        return self.home / "huey.db"

    @property
    def builds_dir(self) -> Path:
        return self.home / "builds"

    @property
    def caches_dir(self) -> Path:
        return self.home / "caches"

    @property
    def mirrors_dir(self) -> Path:
        return self.home / "mirrors"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.env"


def load(home: Path) -> Settings:
    """Read HOME/lightci.toml (optional) and apply LIGHTCI_<SECTION>_<NAME> overrides."""
    path = home / "lightci.toml"
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, dict[str, Any]] = {}
    for section, defaults in DEFAULTS.items():
        given = data.get(section, {})
        if not isinstance(given, dict):
            raise UserError(f"{path}: [{section}] must be a table")
        unknown = set(given) - set(defaults)
        if unknown:
            known = ", ".join(sorted(defaults))
            raise UserError(
                f"{path}: unknown key(s) {sorted(unknown)} in [{section}] (known: {known})"
            )
        current = {}
        for name, default in defaults.items():
            value = given.get(name, default)
            where = f"{path} [{section}] {name}"
            env_name = f"LIGHTCI_{section.upper()}_{name.upper()}"
            if env_name in os.environ:
                value, where = os.environ[env_name], env_name
            current[name] = _coerce(value, default, where)
        values[section] = current
    unknown = {k for k in data if k not in DEFAULTS and k not in TOP_LEVEL}
    if unknown:
        raise UserError(f"{path}: unknown key(s) {sorted(unknown)}")
    jobs_dir = os.environ.get("LIGHTCI_JOBS_DIR") or data.get("jobs_dir") or "jobs"

    def at(name: str) -> str:  # where a [builds] value came from: the file or its override
        env_name = f"LIGHTCI_BUILDS_{name.upper()}"
        return env_name if env_name in os.environ else f"{path}: [builds] {name}"

    if values["builds"]["slots"] < 0:
        raise UserError(f"{at('slots')} must be 0 (paused) or more")
    for name, (words, least) in SIZES.items():  # "0" or a bare 5 (bytes): no build fits
        value, smallest = values["builds"][name], MIN_MEMORY if least else 0
        if value not in words and not size_at_least(value, smallest):
            other = "".join(f' or "{w}"' for w in words)
            raise UserError(f'{at(name)} must be a size such as "2G"{other}')
    if values["builds"]["starve_after"] < 0:
        raise UserError(f"{at('starve_after')} must be 0 or more seconds")
    if values["builds"]["sandbox"] not in SANDBOXES:
        raise UserError(f"{at('sandbox')} must be one of {', '.join(SANDBOXES)}")
    return Settings(home=home, values=values, jobs_dir=(home / str(jobs_dir)).resolve())


_lock = threading.Lock()
_cache: dict[Path, Settings] = {}
_files: dict[Path, str] = {}  # each home's lightci.toml, as a string for os.stat
_environment: tuple[dict, tuple] = ({}, ())  # (the environment seen, its LIGHTCI_* pairs)


def _stamp(home: Path) -> tuple:
    """What the settings of `home` were read from: lightci.toml's stat and LIGHTCI_*.

    settings() runs several times a build, so this is one stat and one dict
    comparison: decoding every variable to find LIGHTCI_* costs 25 us a call.
    """
    path = _files.get(home)
    if path is None:
        path = _files[home] = str(home / "lightci.toml")
    try:
        st = os.stat(path)
        file_stamp: tuple = (st.st_mtime_ns, st.st_size, st.st_ino)
    except FileNotFoundError:
        file_stamp = ()
    return file_stamp + _lightci_variables()


def _lightci_variables() -> tuple:
    """The LIGHTCI_* variables, picked out again only when the environment changed."""
    global _environment
    seen, picked = _environment
    current = os.environ._data  # the bytes os.environ keeps: equal dicts, equal environment
    if current != seen:
        picked = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("LIGHTCI_")))
        _environment = (dict(current), picked)
    return picked


def settings(home: Path | None = None) -> Settings:
    """The current settings, re-read when lightci.toml (or LIGHTCI_* env) changed.

    A broken edit of a running server's lightci.toml keeps the last good
    settings (and logs why) instead of stopping every worker.
    """
    home = home or resolve_home()
    stamp = _stamp(home)
    with _lock:
        cached = _cache.get(home)
        if cached is not None and cached.stamp == stamp:
            return cached
        try:
            fresh = load(home)
        except UserError:
            if cached is None:
                raise
            log.exception("keeping the previous settings")
            cached.stamp = stamp
            return cached
        fresh.stamp = stamp
        _cache[home] = fresh
        return fresh


MIN_TOKEN = 16  # characters: a short token falls to guessing, throttled or not


def check_token(cfg: Settings) -> None:
    """`serve` and `web` refuse a short token; an empty one means no token (all open)."""
    token = cfg.token
    if token and len(token) < MIN_TOKEN:
        raise UserError(
            f"the token ([server] token or LIGHTCI_TOKEN) has {len(token)} characters: use "
            f"at least {MIN_TOKEN}, such as the output of "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )


def hostname() -> str:
    return socket.gethostname()


CONFIG_TEMPLATE = """\
# lightci server settings. Every value can be overridden by LIGHTCI_<SECTION>_<NAME>.
# Changes apply without a restart (host and port aside).

# jobs_dir = "jobs"        # where job definitions live, relative to this file

[server]
host = "127.0.0.1"
port = 8080
token = ""                 # when set: API writes and UI actions need it
public = true              # status pages and read API without a token
trusted_proxy = ""         # e.g. "127.0.0.1": that proxy's X-Forwarded-Proto/Host/For count
apps_port = 0              # e.g. 8081: /apps/<job>/ on an origin of their own; 0 = off
apps_host = ""             # "" = the same as host
url = ""                   # public base URL for links in commit statuses and notifications

[builds]
slots = 2                  # global max of running builds; 0 pauses
queue_timeout = 600        # seconds a build may wait for a slot
timeout = 3600             # default seconds a build may run
retention_days = 7
keep_last = 20
orphan_after = 30          # seconds without a heartbeat before a running build is lost
stop_grace = 30            # seconds a stopping worker (SIGTERM/SIGINT) gives running builds
sandbox = "auto"           # host stages in bubblewrap: "auto" (when it works), "bwrap", "none"
memory_budget = "auto"     # builds start only while their expected peaks fit: "auto" = the
                           # machine's memory minus memory_reserve; a size ("12G"); "" = off
memory_reserve = "1G"
memory_default = "1G"      # expected peak of a key with no history and no job `memory`
starve_after = 600         # seconds after which nothing passes the oldest runnable build

[webhooks]
secret = ""

[upkeep]                   # run by `lightci scheduler` (or `lightci serve`)
sweep_interval = 5         # seconds between sweeps: lost workers, expired queue, re-dispatch
retention_at = "03:00"     # local time of the daily cleanup (retention_days, keep_last)
disk_warn_mb = 2048        # free space under this is a warning (log, dashboard, /metrics)

[registry]                 # credentials for [[images]] pushes
user = ""
password = ""              # the name of a secret in secrets.env, never the password itself

[targets]                  # delivery targets: a job that misses one is flagged on the dashboard
window_days = 30
build_success = 95         # percent
deploy_success = 99        # percent
lead_time = 600            # seconds, p95 of push -> deployed; 0 = no target
queue_wait = 0             # seconds, mean wait for a slot; 0 = no target

[smtp]                     # for [[notify]] email = [...] in job.toml
host = ""
port = 25
user = ""
password = ""              # the NAME of a secret in secrets.env, not the password
from = ""
starttls = false

[deliveries]               # commit statuses and notifications (the outbox)
first_retry = 5            # seconds before the first retry; doubles each time
give_up_after = 3600       # seconds after the state change a delivery is given up
timeout = 10               # seconds one send may take
"""
