"""The token, the webhook secret and the app_job fixture the tests/test_hostile_input*.py
files share; they import app_job_fixture, the app_job fixture."""

from __future__ import annotations

import pytest

TOKEN = "hostile-input-token-0123"
SECRET = "hostile-hook-secret"


@pytest.fixture(name="app_job")
def app_job_fixture(home):
    home.job(
        "app",
        f"""
        webhook_secret = "{SECRET}"
        [params]
        flavor = "dev"
        notes = ""
        """,
        build="echo built\n",
    )
    return "app"
