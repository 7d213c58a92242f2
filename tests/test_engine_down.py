"""With no Docker engine to answer, what needs one says so in one line, and where it looked."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_engine(home, tmp_path, monkeypatch):
    """DOCKER_HOST names a socket nobody listens on (home.env passes it on)."""
    where = f"unix://{tmp_path}/no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", where)
    return f"no Docker engine answers at {where}"


def test_undeploy_says_no_engine_answers_not_a_traceback(home, no_engine):
    home.job("app", "[deploy]\nport = 8080\n", build="true\n")
    result = home.cli("undeploy", "app", check=False)
    assert result.returncode == 2, result
    assert no_engine in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_build_in_a_container_fails_saying_no_engine_answers(home, no_engine):
    home.configure(slots=1)
    home.job("boxed", '[docker]\nimage = "alpine:3"\n', build="true\n")
    home.start_worker()
    [build] = home.wait_for([home.trigger("boxed")])
    assert build["status"] == "failed"
    assert no_engine in build["error"]


def test_two_homes_name_their_app_containers_apart(tmp_path, monkeypatch):
    """Two homes on one engine may each have a job 'web': a deploy frees its slot by name."""
    from lightci import container, homes

    names = []
    for home in ("one", "two"):
        (tmp_path / home).mkdir()
        monkeypatch.setattr(homes, "_chosen_home", tmp_path / home)  # as --home would
        names.append(container.container_name("web", "blue"))
    assert names[0] != names[1] and all(n.startswith("lightci-web-blue-") for n in names)


def test_a_deploy_that_fails_to_start_for_any_reason_does_not_block_the_job(
    bound, home, monkeypatch
):
    """A row left 'checking' refused every deploy of the job for minutes (the audit saw a
    locked database do it); whatever stops the start, the row ends failed."""
    from lightci import deploy, jobs
    from lightci.config import settings
    from lightci.models import Deployment

    home.job("web", "[deploy]\nport = 8000\n", build="true\n")
    job = jobs.load(settings(), "web")

    def locked(*_):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(deploy, "_start", locked)
    with pytest.raises(RuntimeError):
        deploy.launch(job, "lightci/web:1", "sha256:1", "test")
    [row] = Deployment.select()
    assert (row.state, row.error) == ("failed", "start failed: database is locked")
    with pytest.raises(RuntimeError):  # the next deploy is not refused as "already deploying"
        deploy.launch(job, "lightci/web:2", "sha256:2", "test")
