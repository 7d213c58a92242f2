"""The codebase keeps its shape: layered imports, no module past ~400 lines, lazy optionals."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO

PACKAGE = REPO / "lightci"
MAX_LINES = 400
# Imported where used, so a server without them (or a CLI call that never needs them) runs.
OPTIONAL = {"docker", "redis", "psycopg2", "playwright", "playhouse.db_url"}
# Loaded where used, so a process at rest does without them (tests/test_at_rest.py):
# sh with asyncio and ssl, ruamel.yaml, http.client with email, difflib, psutil, the
# YAML editor of a release bump, APScheduler's cron (asyncio, ssl, importlib.metadata),
# and the sender's HTTP and mail clients (ssl, email).
DEFERRED = {
    "sh",
    "ruamel.yaml",
    "http.client",
    "difflib",
    "psutil",
    "lightci.values",
    "apscheduler",
    "urllib.request",
    "smtplib",
    "email",
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_over_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines: split it by noun"


def test_no_module_reads_proc_itself():
    """Processes are psutil's business, so a worker on macOS works; bwrap's argv may name /proc."""
    readers = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.startswith("/proc") and path.name != "sandbox.py":
                    readers.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.JoinedStr) and any(
                isinstance(v, ast.Constant) and str(v.value).startswith("/proc/")
                for v in node.values
            ):
                readers.append(f"{path.relative_to(REPO)}:{node.lineno} (an f-string)")
    assert not readers, readers


def test_imports_inside_functions_are_only_optional_or_deferred_dependencies():
    found = []
    for path in modules():
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    if not any(name == o or name.startswith(o + ".") for o in OPTIONAL | DEFERRED):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not found, "\n".join(found)


def test_the_import_contracts_hold():
    """setup.cfg's import-linter contracts: layers, no circles, function-level imports counted."""
    linter = BIN / "lint-imports"
    if not linter.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([str(linter)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


def test_queueing_a_build_loads_no_web_server_runner_or_docker(tmp_path):
    """`lightci trigger` imports what queueing uses, and builds no queue at import."""
    code = (
        "import sys; from lightci.cli import builds;"
        "heavy = [m for m in ('bottle', 'waitress', 'docker', 'sh', 'apscheduler',"
        " 'huey', 'redis', 'lightci.runner', 'lightci.web', 'lightci.deploy', 'psutil')"
        " if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"LIGHTCI_HOME": str(tmp_path / "nowhere"), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]"
    assert not (tmp_path / "nowhere").exists(), "importing the CLI made a home"


DRIVERS = ("psycopg2", "psycopg", "pymysql", "MySQLdb")


def loaded_drivers(home, code: str) -> list[str]:
    """The database drivers a fresh interpreter has loaded after `code`, for the home."""
    probe = f"{code}; print(json.dumps([m for m in {DRIVERS!r} if sys.modules.get(m)]))"
    out = subprocess.run(
        [sys.executable, "-c", f"import json, sys; {probe}"],
        capture_output=True,
        text=True,
        check=True,
        env=home.env,
        cwd=home.path,
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_a_trigger_on_a_sqlite_home_loads_no_postgresql_or_mysql_driver(home):
    """peewee imports every driver it finds; psycopg2 alone costs a trigger ~15 ms."""
    pytest.importorskip("psycopg2")  # else the check proves nothing
    home.job("app", build="true")
    code = "from lightci.cli import main; main(['trigger', 'app'])"
    assert loaded_drivers(home, code) == []
    assert home.builds()[0]["status"] == "queued"


def test_a_home_on_postgresql_keeps_its_driver(home):
    """The CLI's choice follows [database] url: peewee finds psycopg2 there."""
    pytest.importorskip("psycopg2")
    config = home.path / "lightci.toml"
    config.write_text(
        config.read_text() + '[database]\nurl = "postgresql://nobody@127.0.0.1:1/x"\n'
    )
    code = "from lightci.cli import drivers; drivers.skip_other_drivers(None); import peewee"
    assert "psycopg2" in loaded_drivers(home, code)
