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
