"""POST /api/detect: a job proposed from small repositories of every kind (SPEC section 9)."""

from __future__ import annotations

import tomllib

import pytest

from lightci import jobfiles
from lightci.config import settings
from tests.gitrepos import Repo

PUBSPEC = "name: app\ndependencies:\n  flutter:\n    sdk: flutter\n"
ANDROID_GRADLE = "plugins {\n  id 'com.android.application'\n}\n"
WORKFLOW = """\
name: CI
on: [push]
jobs:
  unit tests:
    runs-on: ubuntu-latest
    strategy: {matrix: {py: ["3.11"]}}
    steps:
      - uses: actions/checkout@v4
      - name: say
        run: echo hello-from-workflow
      - run: |
          echo "python ${{ matrix.py }}"
          echo second-line
  lint:
    runs-on: ubuntu-latest
    steps:
      - run: echo linted
"""

# kind, the repository's files, and {script: a line a user of that ecosystem would run}
KINDS = [
    (
        "Flutter",
        {"pubspec.yaml": PUBSPEC, ".fvmrc": '{"flutter": "3.22.0"}', "android/build.gradle": ""},
        {"setup.sh": "fvm flutter pub get", "test.sh": "fvm flutter test",
         "build.sh": "fvm flutter build apk"},
    ),
    (
        "Flutter",
        {"pubspec.yaml": PUBSPEC, "android/app/build.gradle": ANDROID_GRADLE},
        {"setup.sh": "\nflutter pub get", "build.sh": "\nflutter build apk"},
    ),
    (
        "Node",
        {"package.json": '{"scripts": {"test": "jest", "build": "tsc"}}',
         "package-lock.json": "{}"},
        {"install.sh": "npm ci", "test.sh": "npm test", "build.sh": "npm run build"},
    ),
    (
        "Node",
        {"package.json": '{"scripts": {"lint": "eslint ."}}', "yarn.lock": ""},
        {"install.sh": "yarn install --frozen-lockfile", "lint.sh": "yarn run lint"},
    ),
    (
        "Node",
        {"package.json": '{"scripts": {"test": "vitest"}}', "pnpm-lock.yaml": ""},
        {"install.sh": "pnpm install --frozen-lockfile", "test.sh": "pnpm test"},
    ),
    (
        "Python",
        {"requirements.txt": "requests\n", "test_x.py": "def test_x(): pass\n"},
        {"setup.sh": "pip install -r requirements.txt", "test.sh": "pytest"},
    ),
    ("Python", {"pyproject.toml": "[project]\nname = 'x'\n"}, {"setup.sh": "pip install -e ."}),
    ("Rust", {"Cargo.toml": "[package]\nname = 'x'\n"}, {"test.sh": "cargo test"}),
    ("Go", {"go.mod": "module example.com/x\n"}, {"test.sh": "go test ./..."}),
    (
        "Java (Gradle)",
        {"build.gradle": "plugins { id 'java' }\n", "gradlew": "#!/bin/sh\n"},
        {"build.sh": "./gradlew build"},
    ),
    ("Java (Maven)", {"pom.xml": "<project/>\n"}, {"build.sh": "mvn -B verify"}),
    (
        "Android",
        {"settings.gradle": "", "app/build.gradle": ANDROID_GRADLE, "gradlew": "#!/bin/sh\n"},
        {"test.sh": "./gradlew test", "build.sh": "./gradlew assembleDebug"},
    ),
    (
        "Dockerfile",
        {"Dockerfile": "FROM nginx\nEXPOSE 3000\n"},
        {"check.sh": "[deploy]"},
    ),
    (
        "GitHub workflow",
        {".github/workflows/ci.yml": WORKFLOW, "README.md": "x\n"},
        {"unit-tests.sh": "echo hello-from-workflow\n", "lint.sh": "echo linted"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "files", "expected"), KINDS, ids=lambda v: str(v)[:20])
def test_detect_proposes_what_a_user_of_the_ecosystem_runs(web, tmp_path, kind, files, expected):
    repo = Repo(tmp_path)
    repo.commit({"README.md": "main branch\n"})
    repo.commit(files, branch="feature")
    answer = web.post("/api/detect", json_body={"repo": str(repo.bare), "branch": "feature"})
    assert answer.status == 200, answer.text
    proposal = answer.json()
    assert proposal["kind"] == kind
    for script, line in expected.items():
        assert line in proposal["scripts"][script], (script, proposal["scripts"])
    toml = tomllib.loads(proposal["toml"])
    assert toml["repo"] == str(repo.bare) and toml["branches"] == ["feature"]
    assert [f"{s}.sh" for s in toml["stages"]] == list(proposal["scripts"])
    # The proposal saves as it is: the loader accepts it, and every script has its #! line.
    jobfiles.validate(settings(), "proposed", proposal["toml"], proposal["scripts"])
    assert not list((settings().mirrors_dir).iterdir())  # the temporary mirror is gone


def test_a_dockerfile_proposes_deploy_on_its_exposed_port_and_workflow_notes(web, tmp_path):
    repo = Repo(tmp_path)
    repo.commit({"Dockerfile": "FROM scratch\nEXPOSE 3000\n", "go.mod": "module x\n"})
    proposal = web.post("/api/detect", json_body={"repo": str(repo.bare)}).json()
    assert proposal["kind"] == "Go"
    assert tomllib.loads(proposal["toml"])["deploy"] == {
        "dockerfile": "Dockerfile",
        "port": 3000,
        "health": "/",
    }
    flow = Repo(tmp_path, "flow")
    flow.commit({".github/workflows/ci.yml": WORKFLOW})
    proposal = web.post("/api/detect", json_body={"repo": str(flow.bare)}).json()
    assert '# echo "python ${{ matrix.py }}"' in proposal["scripts"]["unit-tests.sh"]
    assert any("skipped `uses: actions/checkout@v4`" in note for note in proposal["notes"])


def test_detect_refuses_bad_input_and_runs_nothing(web, tmp_path):
    repo = Repo(tmp_path)
    marker = tmp_path / "ran"
    repo.commit(
        {".github/workflows/ci.yml": f"jobs:\n  a:\n    steps:\n      - run: touch {marker}\n"}
    )
    for body, words in (
        ({"repo": str(repo.bare), "branch": "-x"}, "not a valid git branch name"),
        ({"repo": "--upload-pack=touch /tmp/x"}, "not a git URL or path"),
        ({"repo": str(tmp_path / "nothing.git")}, "does not appear to be a git repository"),
        ({"repo": str(repo.bare), "branch": "nope"}, "cannot fetch nope of"),
        ({"repo": "ext::sh -c touch% /tmp/pwned"}, "cannot fetch"),
        ({"repo": str(repo.bare), "extra": 1}, "unknown field"),
    ):
        answer = web.post("/api/detect", json_body=body)
        assert answer.status == 400 and words in answer.json()["error"], (body, answer.text)
    assert web.post("/api/detect", json_body={"repo": str(repo.bare)}).status == 200
    assert not marker.exists()
