"""Job definitions: jobs/<name>/job.toml and stage scripts, with errors that say what to fix."""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightci import release, reports
from lightci.config import MIN_MEMORY, Settings, size_at_least
from lightci.errors import UserError, unknown_key
from lightci.jobtables import DEPLOY_KEYS, DOCKER_KEYS, scalar, table

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
BUILTIN_FIELDS = ("branch", "commit", "job", "pr", "tag")
DEFAULT_KEY = "{branch}"
CACHE_POLICIES = ("build", "key", "job")
SUPERSEDE = ("none", "queued", "running")
RELEASE = ("images", "gitops")  # validated by lightci.release
MAX_PARAM_BYTES = 4096  # a trigger's param value, in UTF-8
# Tool cache variables and their directory under the cache root (lightci.workspace).
CACHE_VARS = {
    "XDG_CACHE_HOME": "xdg",
    "PUB_CACHE": "pub",
    "GRADLE_USER_HOME": "gradle",
    "npm_config_cache": "npm",
    "PIP_CACHE_DIR": "pip",
    "CARGO_HOME": "cargo",
    "GOMODCACHE": "go/mod",
    "GOCACHE": "go/build",
}
# What a param may not be named: a param is an environment variable whose value any
# trigger sets. These lightci sets for every stage (SPEC 4), or they change how programs
# and shells start; LIGHTCI_* and LD_* likewise.
RESERVED_ENV = {"HOME", "TMPDIR", "CI", "LOCAL_DIR", "PATH", "IFS", "ENV", "BASH_ENV"}
RESERVED_ENV |= {"SHELLOPTS", "BASHOPTS", "PS4", *(name.upper() for name in CACHE_VARS)}
COMMIT = re.compile(r"[0-9a-fA-F]{4,64}\Z")  # a commit id, whole or abbreviated


# What git's check-ref-format --branch refuses: a component that starts with "." or ends
# with ".lock", "..", control characters, space ~ ^ : ? * [ \, "//", "@{", a leading or
# trailing "/", a trailing ".". Checked here, not by running git: a trigger runs no git.
_NOT_A_BRANCH = re.compile(r"(^|/)\.|\.lock(/|$)|\.\.|[\x00-\x20\x7f~^:?*\[\\]|//|@\{|^/|[/.]$")


def valid_branch(branch: str) -> bool:
    """A name git accepts as a branch (and no option: not "-x")."""
    if not branch or branch.startswith("-") or branch in ("@", "HEAD"):
        return False
    return not _NOT_A_BRANCH.search(branch)


def check_branch(branch: str) -> str:
    """A branch from a trigger or a forge: a git branch name, or a 400 before any row."""
    if branch and not valid_branch(branch):
        raise UserError(f"branch {branch[:80]!r} is not a valid git branch name")
    return branch


def check_commit(commit: str, what: str = "commit") -> str:
    """A commit id from a trigger or a forge: hex, or a 400 before any row or git sees it."""
    if commit and not COMMIT.match(commit):
        raise UserError(f"{what} {commit[:80]!r} is not a hex commit id")
    return commit


def glob_regex(pattern: str) -> re.Pattern:
    """'release/*' matches one path segment, '**' any number of them."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c)))
        i += 1
    return re.compile("".join(out) + r"\Z")


def matches_any(value: str, patterns: list[str]) -> bool:
    return any(glob_regex(p).match(value) for p in patterns)


@dataclass(frozen=True)
class Job:
    name: str
    dir: Path
    shared_dir: Path
    description: str = ""
    repo: str = ""
    branches: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    key: str = DEFAULT_KEY
    stages: list[str] = field(default_factory=list)
    timeout: int | None = None
    queue_timeout: int | None = None
    cache: str = "build"
    supersede: str = "none"
    memory: str = ""
    priority: int = 0
    secrets: list[str] = field(default_factory=list)
    webhook_secret: str = ""
    params: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    docker: dict[str, Any] = field(default_factory=dict)
    deploy: dict[str, Any] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)
    gitops: dict[str, Any] = field(default_factory=dict)
    pull_requests: bool = False
    fork_secrets: bool = False
    forge: dict[str, Any] = field(default_factory=dict)
    notify: list[dict[str, Any]] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    config: str = "server"  # "repo": the pipeline is .lightci/ at the built commit

    def script(self, stage: str) -> Path:
        """jobs/<job>/<stage>.sh, else jobs/_shared/<stage>.sh."""
        own = self.dir / f"{stage}.sh"
        return own if own.exists() else self.shared_dir / f"{stage}.sh"

    def shown(self, stage: str) -> str:
        """The script as a (public) log names it: `hello/build.sh`, never the server's path."""
        return "/".join(self.script(stage).parts[-2:])

    def resolve_params(self, given: dict[str, Any] | None) -> dict[str, str]:
        """The job's defaults with a trigger's overrides; a trigger may never add one."""
        if given is None:
            given = {}
        if not isinstance(given, dict):  # false, 0, "" and [] too: not "no params"
            raise UserError("params must be an object of NAME: value")
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            names = ", ".join(str(n)[:64] for n in unknown[:10])
            raise UserError(f"job {self.name!r} has no param(s) {names} (known params: {known})")
        resolved = dict(self.params)
        for name, value in given.items():
            if isinstance(value, dict | list) or value is None:
                raise UserError(f"param {name!r} must be a string, number or boolean")
            resolved[name] = _param_value(name, scalar(value))
        return resolved

    def render_key(
        self, branch: str, commit: str, params: dict[str, str], pr: Any = "", tag: str = ""
    ) -> str:
        values = {**params, "branch": branch, "commit": commit, "job": self.name}
        values.update(pr="" if pr is None else pr, tag=tag)
        if self.key == DEFAULT_KEY and (tag or pr not in ("", None)):
            # Under the default key a tag's builds would share one key (their branch is
            # empty), and a pull request's the key of its head branch's name: a fork's
            # "main" would supersede main's builds. Each gets its own; the space keeps it
            # apart from any branch (git allows none in a branch name).
            return f"{self.name}:tag {tag}" if tag else f"{self.name}:pr {pr}"
        return f"{self.name}:{self.key.format_map(values)}"

    def wants_branch(self, branch: str) -> bool:
        return not self.branches or matches_any(branch, self.branches)

    def wants_tag(self, tag: str) -> bool:
        return matches_any(tag, self.tags)

    def wants_paths(self, files: list[str]) -> bool:
        return not self.paths or any(matches_any(f, self.paths) for f in files)


def _param_value(name: str, value: str) -> str:
    """A trigger's param value becomes an environment variable of every stage: a
    NUL cannot be one, and megabytes of it would fill the job page and the log."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from JSON's \ud800
        raise UserError(f"param {name!r} is not valid Unicode text") from None
    if size > MAX_PARAM_BYTES:
        raise UserError(f"param {name!r} is {size} bytes: at most {MAX_PARAM_BYTES}")
    bad = next((c for c in value if c not in "\t\n" and (ord(c) < 32 or 127 <= ord(c) < 160)), None)
    if bad is not None:
        raise UserError(
            f"param {name!r} has the control character U+{ord(bad):04X}: "
            "only printable text, tabs and newlines"
        )
    return value


_FIELDS: dict[str, tuple[Any, str]] = {
    "description": (str, "a string"),
    "repo": (str, "a string (a git URL or path)"),
    "branches": (list, "a list of glob strings"),
    "tags": (list, "a list of glob strings"),
    "paths": (list, "a list of glob strings"),
    "key": (str, 'a template string such as "{flavor}_{branch}"'),
    "stages": (list, "a list of stage names"),
    "timeout": (int, "a positive number of seconds"),
    "queue_timeout": (int, "a positive number of seconds"),
    "cache": (str, f"one of {', '.join(CACHE_POLICIES)}"),
    "supersede": (str, f"one of {', '.join(SUPERSEDE)}"),
    "memory": (str, 'a size such as "3G" or "512M"'),
    "priority": (int, "a whole number, higher is claimed first (such as 10 or -5)"),
    "secrets": (list, "a list of names from secrets.env"),
    "webhook_secret": (str, "a string"),
    "params": (dict, "a table of NAME = default"),
    "env": (dict, "a table of NAME = value"),
    "docker": (dict, "a table"),
    "deploy": (dict, "a table"),
    "images": (object, "[[images]] tables"),  # checked by lightci.release
    "gitops": (dict, "a table"),
    "pull_requests": (bool, "true or false"),
    "fork_secrets": (bool, "true or false"),
    "config": (str, '"server" or "repo" (the pipeline from .lightci/ in the repository)'),
}


def parse(name: str, job_dir: Path, shared_dir: Path) -> Job:
    """Read and validate one job.toml; every error names the file, the key and the problem."""
    path = job_dir / "job.toml"
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None
    else:
        data = {}

    def fail(key: str, problem: str) -> UserError:
        return UserError(f"{path}: {key}: {problem}")

    outbound = reports.section8(fail, data)  # [forge], [[notify]], after, artifacts, schedules
    for key, value in data.items():
        if key not in _FIELDS:
            raise fail(key, unknown_key(key, [*_FIELDS, *reports.KEYS, *RELEASE]))
        kind, desc = _FIELDS[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is list and ok:
            ok = all(isinstance(v, str) and v for v in value)
        if kind is int and ok:
            ok = 0 < value < 2**31  # seconds; the job table stores 64-bit integers at most
            ok = ok or (key == "priority" and -(2**31) < value < 2**31)
        if not ok:  # a secret is not repeated: the error shows on the dashboard
            got = type(value).__name__ if key == "webhook_secret" else repr(value)
            raise fail(key, f"must be {desc}, got {got}")
    for key in ("cache", "supersede"):
        allowed = CACHE_POLICIES if key == "cache" else SUPERSEDE
        if key in data and data[key] not in allowed:
            raise fail(key, f"must be one of {', '.join(allowed)}, got {data[key]!r}")
    if data.get("memory"):  # "0" would fail every build of the job, out of memory
        if not size_at_least(data["memory"], MIN_MEMORY):
            raise fail("memory", f'must be a size from "6M", such as "3G", got {data["memory"]!r}')
    if data.get("config", "server") not in ("server", "repo") or (
        data.get("config") == "repo" and not data.get("repo")
    ):
        raise fail(
            "config", f'must be "server", or "repo" with a repo = URL, got {data["config"]!r}'
        )
    docker = table(fail, "docker", data.get("docker"), DOCKER_KEYS)
    deploy = table(fail, "deploy", data.get("deploy"), DEPLOY_KEYS)
    images = release.images(fail, data.get("images"))
    gitops = release.gitops(fail, data.get("gitops"), [i["component"] for i in images])
    data = {k: v for k, v in data.items() if k not in RELEASE}
    params = {}
    for pname, pvalue in data.get("params", {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", pname):
            raise fail("params", f"{pname!r} is not a valid name (letters, digits, _)")
        if isinstance(pvalue, dict | list):
            raise fail(f"params.{pname}", "must be a string, number or boolean")
        upper = pname.upper()
        if upper in RESERVED_ENV or upper.startswith(("LIGHTCI_", "LD_")):
            raise fail(
                f"params.{pname}",
                f"would set ${upper}, which lightci sets or which changes how programs "
                "start, to any trigger's value: choose another name",
            )
        params[pname] = scalar(pvalue)
    env = {}
    for ename, evalue in data.get("env", {}).items():
        if isinstance(evalue, dict | list):
            raise fail(f"env.{ename}", "must be a string, number or boolean")
        env[ename] = scalar(evalue)
    template = data.get("key", DEFAULT_KEY)
    for i, entry in enumerate(outbound["schedules"], 1):  # a trigger may never add a param
        unknown = sorted(set(entry["params"]) - set(params))
        if unknown:
            raise fail("schedules", f"#{i} sets param(s) {', '.join(unknown)} the job has not")
    allowed_fields = set(params) | set(BUILTIN_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise fail("key", f"bad template {template!r}: {exc}") from None
    for _, field_name, spec, conv in parsed:
        if field_name is None:
            continue
        if field_name not in allowed_fields or spec or conv:
            known = ", ".join(sorted(allowed_fields))
            raise fail("key", f"unknown field {{{field_name}}} in {template!r} (known: {known})")
    job = Job(
        name=name,
        dir=job_dir,
        shared_dir=shared_dir,
        **{k: v for k, v in data.items() if k not in ("params", "env", "docker", "deploy")},
        params=params,
        env=env,
        docker=docker,
        deploy=deploy,
        images=images,
        gitops=gitops,
        **outbound,
    )
    if job.config == "repo":  # its stages are checked at the commit (lightci.repoconfig)
        return job
    stages = job.stages or sorted(p.stem for p in job_dir.glob("*.sh"))
    if not stages:
        raise UserError(f"{job_dir}: no stages: add a NAME.sh script or stages = [...] to job.toml")
    for stage in stages:
        if not reports.STAGE_NAME.fullmatch(stage):
            raise fail("stages", f"{stage!r} is not a valid stage name")
        if not job.script(stage).exists():
            raise fail(
                "stages",
                f"no script for stage {stage!r}: expected {job_dir / stage}.sh "
                f"or {shared_dir / stage}.sh",
            )
    return Job(**{**job.__dict__, "stages": stages})


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME.match(name):
        named = "no job name" if name is None else f"bad job name {name!r}"
        raise UserError(f"{named}: use letters, digits, '.', '_' and '-' (max 64)")


def load(cfg: Settings, name: str) -> Job:
    """The job as its files say now (a changed job.toml applies to the next build)."""
    check_name(name)
    job_dir = cfg.jobs_dir / name
    if name.startswith("_") or not job_dir.is_dir():
        raise UserError(f"no job {name!r} in {cfg.jobs_dir}", status=404)
    shared_dir = cfg.jobs_dir / "_shared"
    stamp = (_stat(job_dir / "job.toml"), _stat(job_dir), _stat(shared_dir))
    cached = _parsed.get(job_dir)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:  # a job rewritten while read (lightci.jobfiles swaps whole dirs) is read again
        job = parse(name, job_dir, shared_dir)
    except UserError:
        if _stat(job_dir) == stamp[1]:
            raise
        return load(cfg, name)
    if _stat(job_dir) != stamp[1]:
        return load(cfg, name)
    _parsed[job_dir] = (stamp, job)
    return job


# Parsed jobs by directory, with the stat of what they were parsed from: a webhook
# burst parses job.toml once, and any edit (or a new stage script) parses it again.
_parsed: dict[Path, tuple[tuple, Job]] = {}


def _stat(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def names(cfg: Settings) -> list[str]:
    if not cfg.jobs_dir.is_dir():
        return []
    return sorted(p.name for p in cfg.jobs_dir.iterdir() if p.is_dir() and NAME.match(p.name))


def load_all(cfg: Settings) -> tuple[list[Job], dict[str, str]]:
    """Every job that loads, and an error message for each that does not."""
    good, broken = [], {}
    for name in names(cfg):
        try:
            good.append(load(cfg, name))
        except UserError as exc:
            broken[name] = str(exc)
    # A directory that is not a job by its name (_shared and .git aside) would be left out
    # of every list without a word.
    found = cfg.jobs_dir.iterdir() if cfg.jobs_dir.is_dir() else ()
    for odd in sorted(p.name for p in found if p.is_dir() and not NAME.match(p.name)):
        if not odd.startswith(("_", ".")):
            broken[odd] = f"{odd!r} is not a job name ({NAME.pattern[:-2]}): rename its directory"
    return good, broken
