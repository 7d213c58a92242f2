"""Property tests: whatever a person writes into job.toml, or passes as a param or a
branch, lightci answers with a Job or with a UserError that names the file, never a
traceback; and a key template that loads always renders.
"""

from __future__ import annotations

import datetime
import math
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lightci import UserError, jobs

KNOWN_KEYS = [
    "description", "repo", "branches", "tags", "paths", "key", "stages", "timeout",
    "queue_timeout", "cache", "supersede", "memory", "secrets", "webhook_secret", "params",
    "env", "docker", "deploy",
]  # fmt: skip

PROPERTIES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def job_dir():
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jobs"
        job = root / "app"
        job.mkdir(parents=True)
        (job / "build.sh").write_text("true\n")
        (root / "_shared").mkdir()
        yield job


def load(job_dir: Path, text: str | bytes) -> jobs.Job:
    path = job_dir / "job.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return jobs.parse("app", job_dir, job_dir.parent / "_shared")


def outcome(job_dir: Path, text: str | bytes) -> jobs.Job | UserError:
    """The job, or the UserError; any other exception fails the test."""
    try:
        return load(job_dir, text)
    except UserError as exc:
        message = str(exc)
        assert message and str(job_dir) in message, f"the error does not name the job: {message}"
        assert "Traceback" not in message
        return exc


# -- a tiny TOML writer for generated values ---------------------------------------


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(value)


def toml_string(value: str) -> str:
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c for c in value
    )
    return f'"{escaped}"'


def toml_document(data: dict) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in data.items())


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
scalars = (
    st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
    | st.dates()
    | st.datetimes()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=8,
)
documents = st.dictionaries(st.sampled_from(KNOWN_KEYS) | text, values, max_size=6)


@PROPERTIES
@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_as_job_toml_give_a_job_or_a_clear_error(job_dir, raw):
    outcome(job_dir, raw)


@PROPERTIES
@given(data=documents)
@example(data={"timeout": 2**70})
@example(data={"queue_timeout": 2**64})
def test_any_toml_document_gives_a_job_or_a_clear_error(job_dir, data):
    result = outcome(job_dir, toml_document(data))
    if isinstance(result, jobs.Job):
        # What a build row stores must fit the job table's integers.
        assert all(0 < (t or 1) < 2**63 for t in (result.timeout, result.queue_timeout))
        assert result.stages == ["build"] or result.stages == data.get("stages")


template_parts = st.lists(
    st.sampled_from(["{", "}", "{{", "}}", "!r", ":>4", ".x", "[0]", "branch", "commit", "job",
                     "flavor", "flavour", "_", "-", "/", "0", ""]),
    max_size=8,
).map("".join)  # fmt: skip


@PROPERTIES
@given(
    template=template_parts | text,
    branch=st.text(max_size=40),
    commit=st.text(max_size=40),
    flavor=st.text(max_size=20),
)
def test_a_key_template_that_loads_always_renders(job_dir, template, branch, commit, flavor):
    doc = toml_document({"key": template, "params": {"flavor": "dev"}})
    result = outcome(job_dir, doc)
    if isinstance(result, UserError):
        assert "key" in str(result)
        return
    try:
        params = result.resolve_params({"flavor": flavor})
    except UserError as exc:  # a control character in the value (issue 9, item 10)
        assert "control character" in str(exc)
        return
    key = result.render_key(branch, commit, params)
    assert key.startswith("app:")
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    assert fields <= {"branch", "commit", "job", "flavor"}


@PROPERTIES
@given(given_params=st.dictionaries(text, values, max_size=4) | values)
def test_trigger_params_give_resolved_strings_or_a_clear_error(job_dir, given_params):
    job = load(job_dir, 'key = "{flavor}"\n[params]\nflavor = "dev"\nplatform = "android"\n')
    try:
        resolved = job.resolve_params(given_params)
    except UserError as exc:
        assert "param" in str(exc)
        return
    assert set(resolved) == {"flavor", "platform"}
    assert all(isinstance(v, str) for v in resolved.values())
    job.render_key("main", "", resolved)


@PROPERTIES
@given(
    name=st.text(max_size=70),
    stages=st.lists(st.text(max_size=12), max_size=3),
    memory=st.text(max_size=12) | st.from_regex(r"\d{1,400}(\.\d+)?[KMGT]?", fullmatch=True),
)
@example(name="app", stages=[], memory="9" * 400 + "G")
def test_names_stages_and_memory_sizes_are_checked_without_tracebacks(
    job_dir, name, stages, memory
):
    try:
        jobs.check_name(name)
    except UserError as exc:
        assert "bad job name" in str(exc)
    outcome(job_dir, toml_document({"stages": stages}) if stages else "")
    outcome(job_dir, toml_document({"memory": memory}))
