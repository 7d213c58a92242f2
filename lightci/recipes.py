"""What a project of each kind runs: job.toml and stage scripts proposed from its files.

Pure functions of a file tree (lightci.detect reads it from git). Each recipe
proposes what a user of that ecosystem types: `flutter pub get` and `flutter
build apk`, `npm ci` and `npm test`, `pytest`, `cargo test`, `go test ./...`,
`./gradlew build`, `mvn -B verify`. The first recipe that matches wins; a
Dockerfile adds [deploy] to it; GitHub workflows' `run:` steps are the fallback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SHEBANG = "#!/usr/bin/env bash\nset -euo pipefail\n"
STAGE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Tree:
    """A branch's files: their paths, and a way to read one (None when too big or binary)."""

    files: list[str]
    read: Callable[[str], str | None]

    def has(self, *paths: str) -> bool:
        return any(p in self.files for p in paths)

    def text(self, path: str) -> str:
        return (self.read(path) or "") if path in self.files else ""


@dataclass
class Proposal:
    kind: str
    stages: list[tuple[str, str]]  # (stage name, script body without the shebang)
    docker: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    deploy: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, repo: str, branch: str) -> dict[str, Any]:
        lines = [f"description = {json.dumps(f'{self.kind} project (proposed by lightci)')}"]
        lines += [f"repo = {json.dumps(repo)}"]
        if branch:
            lines += [f"branches = [{json.dumps(branch)}]"]
        lines += [f"stages = [{', '.join(json.dumps(n) for n, _ in self.stages)}]"]
        for table, values in (("docker", self.docker), ("deploy", self.deploy)):
            if values:
                lines += ["", f"[{table}]"]
                lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        return {
            "kind": self.kind,
            "toml": "\n".join(lines) + "\n",
            "scripts": {f"{n}.sh": SHEBANG + body.rstrip("\n") + "\n" for n, body in self.stages},
            "notes": self.notes,
        }


def flutter(tree: Tree) -> Proposal | None:
    pubspec = tree.text("pubspec.yaml")
    if not pubspec:
        return None
    if not re.search(r"^\s*(sdk:\s*flutter|flutter:)", pubspec, re.M):
        return Proposal("Dart", [("setup", "dart pub get"), ("test", "dart test")])
    fvm = tree.has(".fvmrc", ".fvm/fvm_config.json")
    tool = "fvm flutter" if fvm else "flutter"
    stages = [("setup", ("fvm install\n" if fvm else "") + f"{tool} pub get")]
    stages.append(("test", f"{tool} analyze\n{tool} test"))
    notes = ["fvm: .fvmrc pins the Flutter version"] if fvm else []
    if any(f.startswith("android/") for f in tree.files):
        stages.append(("build", f"{tool} build apk"))
    elif any(f.startswith("web/") for f in tree.files):
        stages.append(("build", f"{tool} build web"))
    return Proposal("Flutter", stages, notes=notes + ["needs Flutter on the host (or fvm)"])


def node(tree: Tree) -> Proposal | None:
    if not tree.has("package.json"):
        return None
    try:
        scripts = json.loads(tree.text("package.json")).get("scripts") or {}
    except (ValueError, AttributeError):
        scripts = {}
    if tree.has("pnpm-lock.yaml"):
        tool, install = "pnpm", "pnpm install --frozen-lockfile"
    elif tree.has("yarn.lock"):
        tool, install = "yarn", "yarn install --frozen-lockfile"
    elif tree.has("package-lock.json", "npm-shrinkwrap.json"):
        tool, install = "npm", "npm ci"
    else:
        tool, install = "npm", "npm install"
    stages = [("install", ("corepack enable\n" if tool != "npm" else "") + install)]
    for name in ("lint", "test", "build"):
        if name in scripts:
            run = f"{tool} test" if name == "test" else f"{tool} run {name}"
            stages.append((name, run))
    notes = [f"{tool}: by its lockfile", f"package.json scripts: {', '.join(scripts) or 'none'}"]
    return Proposal("Node", stages, {"image": "node:20", "caches": ["npm"]}, notes)


def python(tree: Tree) -> Proposal | None:
    if not tree.has("pyproject.toml", "requirements.txt", "setup.py", "setup.cfg"):
        return None
    venv = "python3 -m venv .venv\n. .venv/bin/activate\npip install --upgrade pip\n"
    if tree.has("requirements.txt"):
        venv += "pip install -r requirements.txt\n"
    if tree.has("pyproject.toml", "setup.py"):
        venv += "pip install -e .\n"
    if tree.has("requirements-dev.txt"):
        venv += "pip install -r requirements-dev.txt\n"
    venv += "pip install pytest"
    stages = [("setup", venv), ("test", ". .venv/bin/activate\npytest")]
    return Proposal("Python", stages, {"image": "python:3.12", "caches": ["pip"]})


def rust(tree: Tree) -> Proposal | None:
    if not tree.has("Cargo.toml"):
        return None
    stages = [("test", "cargo test --locked" if tree.has("Cargo.lock") else "cargo test")]
    stages.append(("build", "cargo build --release"))
    return Proposal("Rust", stages, {"image": "rust:1", "caches": ["cargo"]})


def go(tree: Tree) -> Proposal | None:
    if not tree.has("go.mod"):
        return None
    stages = [("test", "go vet ./...\ngo test ./..."), ("build", "go build ./...")]
    return Proposal("Go", stages, {"image": "golang:1.22"})


def android(tree: Tree) -> Proposal | None:
    gradle = [f for f in tree.files if re.fullmatch(r"(\w+/)?build\.gradle(\.kts)?", f)]
    if not any("com.android." in tree.text(f) for f in gradle):
        return None
    wrapper = "./gradlew" if tree.has("gradlew") else "gradle"
    stages = [("test", f"{wrapper} test"), ("build", f"{wrapper} assembleDebug")]
    notes = ["needs the Android SDK on the host (ANDROID_HOME) or an image with it"]
    return Proposal("Android", stages, notes=notes)


def java(tree: Tree) -> Proposal | None:
    if tree.has("build.gradle", "build.gradle.kts", "settings.gradle", "settings.gradle.kts"):
        wrapper = "./gradlew" if tree.has("gradlew") else "gradle"
        docker = {"image": "eclipse-temurin:21", "caches": ["gradle"]}
        return Proposal("Java (Gradle)", [("build", f"{wrapper} build")], docker)
    if tree.has("pom.xml"):
        maven = "./mvnw" if tree.has("mvnw") else "mvn"
        docker = {"image": "maven:3-eclipse-temurin-21", "caches": ["maven"]}
        return Proposal("Java (Maven)", [("build", f"{maven} -B verify")], docker)
    return None


def dockerfile(tree: Tree) -> Proposal | None:
    if not tree.has("Dockerfile"):
        return None
    check = 'echo "the image is built from Dockerfile by [deploy] after this stage"'
    return Proposal("Dockerfile", [("check", check)])


def deploy_table(tree: Tree) -> tuple[dict[str, Any], list[str]]:
    """[deploy] for a root Dockerfile, on its first EXPOSE port."""
    if not tree.has("Dockerfile"):
        return {}, []
    exposed = re.findall(r"^\s*EXPOSE\s+(\d+)", tree.text("Dockerfile"), re.M | re.I)
    ports = [int(p) for p in exposed if 0 < int(p) < 65536]
    port = ports[0] if ports else 8080
    note = f"Dockerfile: deploys on port {port}" + ("" if ports else " (no EXPOSE found)")
    return {"dockerfile": "Dockerfile", "port": port, "health": "/"}, [note]


def workflows(tree: Tree) -> Proposal | None:
    """The `run:` steps of .github/workflows/*.yml, one stage per workflow job."""
    paths = sorted(f for f in tree.files if re.fullmatch(r"\.github/workflows/[^/]+\.ya?ml", f))
    if not paths:
        return None
    # ruamel.yaml (1.6 MB) is loaded by a proposal that reads workflows, not by `serve` at rest
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    stages: list[tuple[str, str]] = []
    notes: list[str] = []
    yaml = YAML(typ="safe", pure=True)  # YAML 1.2: the key `on` stays a string
    for path in paths:
        try:
            data = yaml.load(tree.text(path))
        except YAMLError as exc:
            notes.append(f"{path}: not valid YAML ({str(exc).splitlines()[0]})")
            continue
        for job_id, spec in ((data or {}).get("jobs") or {}).items():
            body, skipped = _run_steps(spec)
            notes += [f"{path} {job_id}: skipped `uses: {u}`" for u in skipped]
            if body:
                name = STAGE.sub("-", str(job_id)).strip("-.") or "job"
                while name in (n for n, _ in stages):
                    name += "-2"
                stages.append((name, body))
    if not stages:
        return None
    if any("${{" in body for _, body in stages):
        notes.append("from GitHub workflows: lines with ${{ }} are commented out, check them")
    return Proposal("GitHub workflow", stages, notes=notes)


def _run_steps(spec: Any) -> tuple[str, list[str]]:
    lines, skipped = [], []
    steps = spec.get("steps") if isinstance(spec, dict) else None
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict):
            continue
        if "uses" in step:
            skipped.append(str(step["uses"]))
        if isinstance(step.get("run"), str):
            if step.get("name"):
                lines.append(f"# {step['name']}")
            for line in step["run"].rstrip("\n").splitlines():
                lines.append(f"# {line}" if "${{" in line else line)
    return "\n".join(lines), skipped


RECIPES = (flutter, android, node, python, rust, go, java, dockerfile, workflows)


def propose(tree: Tree) -> Proposal:
    for recipe in RECIPES:
        found = recipe(tree)
        if found is not None:
            break
    else:
        found = Proposal("unknown", [("build", 'echo "add your build commands here"')])
        found.notes.append("no known project files: write the stages yourself")
    deploy, notes = deploy_table(tree)
    if deploy:
        found.deploy, found.notes = deploy, found.notes + notes
    if found.kind != "GitHub workflow" and workflows(tree) is not None:
        found.notes.append(".github/workflows has run: steps too; this proposal does not use them")
    return found
