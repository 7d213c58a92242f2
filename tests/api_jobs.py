"""The two jobs and the token the tests/test_api*.py files share; jobs is a fixture."""

from __future__ import annotations

import pytest

TOKEN = "t0ken-for-the-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(name="jobs")
def jobs_fixture(home):
    home.job(
        "app",
        """
        description = "the app"
        repo = "https://deploy:hunter2@git.example.com/org/app.git"
        key = "{flavor}_{branch}"
        webhook_secret = "never-shown"
        [params]
        flavor = "dev"
        [env]
        API_URL = "https://api.example.com"
        """,
        build="echo hi\n",
    )
    home.job("lib", "", build="echo lib\n")
    return home


def trigger(web, job="app", headers=None, **body):
    return web.post(f"/api/jobs/{job}/builds", json_body=body, headers=headers)
