"""Release pipelines: component images to a registry, a GitOps bump, rollback, history."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

VALUES = """\
# Deployment values for the stage cluster.
---
global:
  domain: 'stage.example.com'   # single quotes, two spaces before the comment
  replicas: 2
core:
  image:
    repository: "registry.example.com/org/app"  # double quotes
    tag: 'core-stage-00000000'
    pullPolicy: IfNotPresent
  env:
    - name: MODE
      value: "fast"
    - {name: ODD, value: 'x: y'}
batch:
  image: {repository: registry.example.com/org/app, tag: "batch-stage-00000000"}
  schedule: "*/5 * * * *"
monitor:
  image:
    tag: monitor-stage-00000000   # plain
  args: [--verbose, "--level=3"]
  note: >-
    a folded
    block scalar
yes_string: "yes"
"""


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"}
    env |= {"GIT_AUTHOR_NAME": "a person", "GIT_AUTHOR_EMAIL": "p@example.com"}
    env |= {"GIT_COMMITTER_NAME": "a person", "GIT_COMMITTER_EMAIL": "p@example.com"}
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"git {args}: {result.stderr}"
    return result.stdout


def deployment_repo(tmp_path: Path, text: str = VALUES) -> tuple[Path, Path]:
    """A bare repository with values.yaml on main, and a clone of someone else's."""
    bare, other = tmp_path / "deployment.git", tmp_path / "other"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "clone", "-q", str(bare), str(other))
    git(other, "checkout", "-q", "-b", "main")
    (other / "values.yaml").write_text(text)
    git(other, "add", "values.yaml")
    git(other, "commit", "-qm", "first values")
    git(other, "push", "-q", "origin", "main")
    return bare, other


def shown(bare: Path, ref: str = "main") -> str:
    return git(bare, "show", f"{ref}:values.yaml")


def gitops_job(home, bare: Path, name: str = "app") -> None:
    home.job(
        name,
        f"""\
        [gitops]
        repo = "{bare}"
        branch = "main"
        file = "values.yaml"
        message = "{{job}} #{{number}}: {{branch}}"
        author = "lightci bot <bot@example.com>"
        [gitops.set]
        "core.image.tag" = "core-stage-{{branch}}"
        "batch.image.tag" = "batch-stage-{{branch}}"
        """,
        build="true\n",
    )


def test_an_edit_changes_only_the_values_and_keeps_every_other_byte():
    from lightci.values import edit

    sets = {
        "core.image.tag": "core-stage-12345678",
        "batch.image.tag": "batch-stage-12345678",
        "monitor.image.tag": "12345678",  # would read as a number: quoted
        "global.domain": "it's",
        "yes_string": "no",
    }
    edited, before = edit(VALUES, sets)
    expected = (
        VALUES.replace("'core-stage-00000000'", "'core-stage-12345678'")
        .replace('"batch-stage-00000000"', '"batch-stage-12345678"')
        .replace("tag: monitor-stage-00000000   #", 'tag: "12345678"   #')
        .replace("'stage.example.com'", "'it''s'")
        .replace('yes_string: "yes"', 'yes_string: "no"')
    )
    assert edited == expected
    assert before["core.image.tag"] == "core-stage-00000000"
    assert edit(edited, sets) == (edited, {**sets, "global.domain": "it's"})
    # A path the file lacks: new lines at the end of its nearest mapping, the rest as it was.
    added, before = edit(VALUES, {"frontend.image.tag": "fe-1", "monitor.image.pull": "x"})
    assert before == {}  # neither was there: a rollback takes them out
    assert (
        added
        == VALUES.replace("   # plain\n", "   # plain\n    pull: x\n")
        + "frontend:\n  image:\n    tag: fe-1\n"
    )


def test_a_rollback_of_added_paths_takes_them_out_and_a_number_stays_a_number():
    from lightci.values import edit

    added, before = edit(VALUES, {"frontend.image.tag": "fe-1", "monitor.image.pull": "x"})
    assert edit(added, before, remove=["frontend.image.tag", "monitor.image.pull"]) == (
        VALUES,
        {"frontend.image.tag": "fe-1", "monitor.image.pull": "x"},
    )
    numbers = "app:\n  replicas: 2   # two\n  ratio: 0.5\n  on: true\n  name: '7'\n"
    edited, _ = edit(numbers, {"app.replicas": "3", "app.ratio": "0.75", "app.name": "8"})
    assert edited == "app:\n  replicas: 3   # two\n  ratio: 0.75\n  on: true\n  name: '8'\n"
    edited, _ = edit(numbers, {"app.replicas": "three"})  # no longer a number: as it reads
    assert edited == numbers.replace("replicas: 2", "replicas: three")


def test_a_rollback_that_changed_nothing_still_undoes_its_bump(bound):
    """Someone reverted by hand: the rollback of bump 2 was 'unchanged', and every rollback
    after it went for bump 2 again, never on to bump 1."""
    from lightci.gitops import last_bump
    from lightci.models import Bump

    row = {"job": "app", "repo": "r", "branch": "main", "file": "values.yaml", "created_at": 1.0}
    first = Bump.create(**row, kind="bump", state="pushed")
    second = Bump.create(**row, kind="bump", state="pushed")
    Bump.create(**row, kind="bump", state="unchanged")
    assert last_bump("app").id == second.id
    Bump.create(**row, kind="rollback", state="unchanged", of=second.id)
    assert last_bump("app").id == first.id
    Bump.create(**row, kind="rollback", state="failed", of=first.id)
    assert last_bump("app").id == first.id  # a failed rollback undid nothing


def test_two_components_of_one_image_reference_fail_before_anything_is_built(bound, tmp_path):
    """core and batch both tagged "{sha8}" into one repository: batch's image replaced core's,
    and {tag:core} would have deployed batch."""
    from types import SimpleNamespace

    from lightci import builds, images, jobs
    from lightci.config import settings

    image = '[[images]]\ncomponent = "{}"\ndockerfile = "{}/Dockerfile"\ntag = "{{sha8}}"\n'
    bound.job("mono", image.format("core", "core") + image.format("batch", "batch"), build="true\n")
    job = jobs.load(settings(), "mono")
    build = builds.trigger("mono", commit="1234567890abcdef1234567890abcdef12345678")
    out = SimpleNamespace(note=print, write=print)
    status, fields = images.build_all(
        settings(), job, build, tmp_path, out, SimpleNamespace(kill_reason="")
    )
    assert status == "failed" and fields["stage"] == "images"
    assert fields["error"].startswith("components core and batch both make lightci/mono:12345678")


def test_a_brace_written_twice_is_one_brace_as_the_job_s_check_reads_it():
    """message = "release {{prod}} {job}" passed load, then failed the bump: KeyError('prod')."""
    from lightci.gitops import render

    assert render("release {{prod}} {job} {tag:core}", {"job": "app"}, {"core": "c-1"}, {}) == (
        "release {prod} app c-1"
    )


def test_values_an_edit_must_not_break_are_set_in_place_or_refused():
    """The audit's bumps that pushed broken YAML and ended success: an empty value (`tag:`),
    a block scalar, an anchor shared by aliases; and a null put back as null, not removed."""
    from lightci.errors import UserError
    from lightci.values import edit

    empty = "core:\n  image:\n    tag:\n    pullPolicy: Always\n"
    edited, before = edit(empty, {"core.image.tag": "v2"})
    assert edited == "core:\n  image:\n    tag: v2\n    pullPolicy: Always\n" and before == {
        "core.image.tag": None
    }
    assert edit(edited, before) == (
        empty.replace("tag:\n", "tag: null\n"),
        {"core.image.tag": "v2"},
    )
    commented = "a:\n  tag:   # see: docs\n  o: 1\n"
    assert edit(commented, {"a.tag": "v"})[0] == "a:\n  tag: v   # see: docs\n  o: 1\n"
    block = "core:\n  tag: |\n    v1\n  other: 1\n"
    assert edit(block, {"core.tag": "v2"})[0] == 'core:\n  tag: "v2"\n  other: 1\n'
    shared = 'defaults:\n  tag: &deftag "v1"\nbatch:\n  image:\n    tag: *deftag\n'
    for path in ("batch.image.tag", "defaults.tag"):
        with pytest.raises(UserError, match="anchor &deftag"):
            edit(shared, {path: "v2"})
    for broken in ("a: [1,\n", "a: *nowhere\n", "a: 1\n---\nb: 2\n"):
        with pytest.raises(UserError, match="not YAML lightci can edit"):
            edit(broken, {"a": "2"})


def test_bumps_race_another_clone_never_lose_a_change_and_roll_back(home, tmp_path, web):
    bare, other = deployment_repo(tmp_path)
    gitops_job(home, bare)
    home.start_worker()
    first = home.trigger("app", "--branch", "one")
    assert home.wait_for([first])[0]["status"] == "success", home.log(first)
    assert "core-stage-one" in shown(bare) and "batch-stage-one" in shown(bare)
    assert git(bare, "log", "-1", "--format=%an <%ae>|%s", "main").strip() == (
        "lightci bot <bot@example.com>|app #1: one"
    )

    # Someone else pushes between lightci's fetch and its push: a hook in lightci's
    # clone of the deployment repo (run by git push, before it sends) makes that happen.
    raced = tmp_path / "raced"
    hook = home.path / "mirrors" / "gitops" / "app" / ".git" / "hooks" / "pre-push"
    hook.write_text(
        "#!/bin/sh\n"
        f"[ -e {raced} ] && exit 0\n"
        f"touch {raced}\n"
        "unset $(env | grep -o '^GIT_[A-Z_]*')\n"
        f"cd {other} && git pull -q origin main"
        " && sed -i 's/replicas: 2/replicas: 3/' values.yaml"
        " && git -c user.name=other -c user.email=o@example.com commit -qam 'scale to 3'"
        " && git push -q origin HEAD:main\n"
    )
    hook.chmod(0o755)
    second = home.trigger("app", "--branch", "two")
    assert home.wait_for([second])[0]["status"] == "success", home.log(second)
    assert raced.exists()
    assert "push rejected" in home.log(second)
    text = shown(bare)
    assert "replicas: 3" in text and "'core-stage-two'" in text and '"batch-stage-two"' in text
    theirs = git(bare, "log", "--format=%s", "main").splitlines()
    assert theirs[:2] == ["app #2: two", "scale to 3"]  # on top of theirs, not over it

    # The same values again: no commit.
    same = home.trigger("app", "--branch", "two")
    assert home.wait_for([same])[0]["status"] == "success", home.log(same)
    assert git(bare, "rev-list", "--count", "main").strip() == "4"
    assert "no commit" in home.log(same)

    # Someone sets batch's tag by hand after the bump: the rollback leaves it be.
    git(other, "pull", "-q", "origin", "main")
    values = (other / "values.yaml").read_text()
    (other / "values.yaml").write_text(values.replace("batch-stage-two", "batch-by-hand"))
    git(other, "commit", "-qam", "batch by hand")
    git(other, "push", "-q", "origin", "HEAD:main")

    # Roll back the last bump (two -> one) with a new commit; theirs stays.
    result = home.cli("rollback", "app", timeout=120)
    action = int(result.stdout.split()[0])
    assert home.build(action)["status"] == "success"
    # Under the key of the build whose bump it reverts: after that key's running build,
    # which would push its own bump on top of the rollback.
    assert home.build(action)["key"] == "app:two"
    text = shown(bare)
    assert "'core-stage-one'" in text and '"batch-by-hand"' in text and "replicas: 3" in text
    assert "changed since the bump, left as they are: batch.image.tag" in home.log(action)
    assert git(bare, "rev-list", "--count", "main").strip() == "6"
    assert "revert of bump" in home.log(action) or "rollback of bump" in home.log(action)

    # Re-apply the second bump through the API.
    bumps = web.get("/api/bumps?job=app").json()["bumps"]
    assert [(b["kind"], b["state"]) for b in bumps] == [
        ("rollback", "pushed"),
        ("bump", "unchanged"),
        ("bump", "pushed"),
        ("bump", "pushed"),
    ]
    two = bumps[2]
    assert two["values"] == {
        "core.image.tag": "core-stage-two",
        "batch.image.tag": "batch-stage-two",
    }
    answer = web.post("/api/jobs/app/rollback", json_body={"to": two["id"]})
    assert answer.status == 202, answer
    again = answer.json()["id"]
    assert home.wait_for([again])[0]["status"] == "success", home.log(again)
    assert "'core-stage-two'" in shown(bare)
    page = web.get("/deployments").text
    for bump in web.get("/api/bumps?job=app").json()["bumps"]:
        assert bump["commit"][:12] in page
    assert "reapply" in page and f'href="/builds/{again}"' in page
    listed = home.cli("deployments", "app").stdout
    assert "rollback" in listed and "core.image.tag=core-stage-two" in listed

    # A retry of the rollback build is that rollback again (not a build of the job).
    retried = int(home.cli("retry", str(action)).stdout.split()[0])
    assert home.wait_for([retried])[0]["status"] == "success", home.log(retried)
    assert "'core-stage-one'" in shown(bare)
    assert "==> stage" not in home.log(retried)


def test_a_rollback_with_nothing_to_revert_is_refused(home, tmp_path, web):
    bare, _ = deployment_repo(tmp_path)
    gitops_job(home, bare)
    result = home.cli("rollback", "app", check=False)
    assert result.returncode == 2 and "no bump to roll back" in result.stderr
    assert web.post("/api/jobs/app/rollback", json_body={"to": "x"}).status == 400

    # A deployment repository that cannot be reached fails the build, and the bump is history.
    gitops_job(home, tmp_path / "nowhere.git", name="lost")
    home.start_worker()
    build = home.trigger("lost", "--branch", "one")
    row = home.wait_for([build])[0]
    assert row["status"] == "failed" and row["error"].startswith("gitops bump failed: git clone")
    assert [b["state"] for b in web.get("/api/bumps?job=lost").json()["bumps"]] == ["failed"]


# -- component images, against a local registry ------------------------------------------


@pytest.fixture
def registry(tmp_path, docker_client, busybox_image) -> int:
    from tests.test_deploy import _registries, _registry

    port = _registry(tmp_path)
    yield port
    while _registries:
        proc = _registries.pop()
        proc.kill()
        proc.wait(10)


def source_repo(tmp_path: Path, base: str) -> tuple[Path, str, str]:
    """A monorepo with three components; a second commit breaks batch's Dockerfile."""
    src = tmp_path / "monorepo"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    for component in ("core", "batch", "monitor"):
        (src / component).mkdir()
        (src / component / "Dockerfile").write_text(
            f"FROM {base}\nRUN echo {component} > /component\n"
        )
    git(src, "add", ".")
    git(src, "commit", "-qm", "three components")
    good = git(src, "rev-parse", "HEAD").strip()
    (src / "batch" / "Dockerfile").write_text(f"FROM {base}\nRUN exit 3\n")
    git(src, "commit", "-qam", "break batch")
    return src, good, git(src, "rev-parse", "HEAD").strip()


def test_a_monorepo_build_pushes_three_images_bumps_their_tags_and_a_broken_one_fails(
    home, tmp_path, registry, busybox_image, web
):
    src, good, broken = source_repo(tmp_path, busybox_image)
    bare, _ = deployment_repo(tmp_path)
    repository = f"127.0.0.1:{registry}/org/app"
    images = "".join(
        f'[[images]]\ncomponent = "{c}"\ndockerfile = "{c}/Dockerfile"\ncontext = "{c}"\n'
        f'tag = "{{component}}-stage-{{sha8}}"\npush = "{repository}"\n'
        for c in ("core", "batch", "monitor")
    )
    home.job(
        "mono",
        f'repo = "{src}"\n{images}'
        f'[gitops]\nrepo = "{bare}"\n'
        '[gitops.set]\n"core.image.tag" = "{tag:core}"\n"batch.image.tag" = "{tag:batch}"\n'
        '"monitor.image.tag" = "{tag:monitor}"\n',
        build="true\n",
    )
    home.start_worker()
    first = home.trigger("mono", "--branch", "main", "--commit", good)
    assert home.wait_for([first], timeout=180)[0]["status"] == "success", home.log(first)
    sha8 = good[:8]
    with urllib.request.urlopen(f"http://127.0.0.1:{registry}/v2/org/app/tags/list") as answer:
        pushed = sorted(json.loads(answer.read())["tags"])
    assert pushed == [f"{c}-stage-{sha8}" for c in ("batch", "core", "monitor")]
    listed = web.get(f"/api/builds/{first}/images").json()["images"]
    assert [(i["component"], i["state"]) for i in listed] == [
        ("core", "pushed"),
        ("batch", "pushed"),
        ("monitor", "pushed"),
    ]
    assert listed[0]["digest"] == _digest(registry, f"core-stage-{sha8}")
    page = web.get(f"/builds/{first}").text
    for component in ("core", "batch", "monitor"):
        assert f"{component}-stage-{sha8}" in page
        assert _digest(registry, f"{component}-stage-{sha8}") in page
    text = shown(bare)
    assert f"'core-stage-{sha8}'" in text and f'"batch-stage-{sha8}"' in text
    assert f"monitor-stage-{sha8}   # plain" in text
    assert git(bare, "log", "-1", "--format=%s", "main").strip() == (
        f"mono #1: core, batch, monitor -> {sha8}"
    )

    second = home.trigger("mono", "--branch", "main", "--commit", broken)
    row = home.wait_for([second], timeout=180)[0]
    assert row["status"] == "failed" and "image batch failed" in row["error"], row
    page = web.get(f"/builds/{second}").text
    assert (
        f"core-stage-{broken[:8]}" in page and _digest(registry, f"core-stage-{broken[:8]}") in page
    )
    assert "batch" in page and "failed" in page and "monitor-stage" not in page
    assert git(bare, "rev-list", "--count", "main").strip() == "2"  # no bump for a failed build


def _digest(port: int, tag: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/org/app/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request) as answer:
        return answer.headers["Docker-Content-Digest"]


def test_release_keys_are_checked_with_errors_that_name_the_key_and_credentials_stay_hidden(
    home,
):
    from lightci import jobs
    from lightci.gitops import hide_credentials

    def problem(toml: str) -> str:
        home.job("bad", toml, build="true\n")
        with pytest.raises(Exception) as caught:
            jobs.parse("bad", home.jobs / "bad", home.jobs / "_shared")
        return str(caught.value)

    image = '[[images]]\ncomponent = "core"\ndockerfile = "core/Dockerfile"\n'
    assert "images[0].tag: unknown field {sha}" in problem(image + 'tag = "{sha}"\n')
    assert "images[0].dockerfile: missing" in problem('[[images]]\ncomponent = "core"\n')
    assert "{tag:batch} names no [[images]] component (core)" in problem(
        image + '[gitops]\nrepo = "r"\nset = { "a.b" = "{tag:batch}" }\n'
    )
    assert "gitops.set: missing" in problem('[gitops]\nrepo = "r"\n')
    assert "images[0].push: must be a repository" in problem(image + 'push = "Not A Repo!!"\n')
    assert "deploy.push: must be a repository" in problem('[deploy]\npush = "x//y"\n')
    assert 'a lowercase name such as "core"' in problem('[[images]]\ncomponent = "Core"\n')
    assert hide_credentials("push to https://bot:s3cret@git.example.com/org/d.git failed") == (
        "push to https://***@git.example.com/org/d.git failed"
    )
    assert hide_credentials("https://bot:p@ss@host/x and https://h/y mail a@b") == (
        "https://***@host/x and https://h/y mail a@b"  # a password with an @ in it
    )
