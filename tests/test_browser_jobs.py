"""A person in Chromium creates, edits and deletes a job on a private server with a token."""

from __future__ import annotations

import os

import pytest

from tests.gitrepos import Repo
from tests.test_browser import CHROMIUM, SHOTS, browser, shot  # noqa: F401 - the fixture
from tests.test_jobs_api import TOKEN, private

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no {CHROMIUM}")


def test_create_edit_and_delete_a_job_from_the_pages(browser, home, serve):  # noqa: F811
    private(home)
    SHOTS.mkdir(parents=True, exist_ok=True)
    site = serve()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(site.url + "/jobs/new")
    page.wait_for_url("**/login?next=*")  # not public: log in first, then back
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url("**/jobs/new")

    page.fill("input[name=name]", "from-web")
    page.fill("#toml", 'timeout = "soon"\n')
    page.fill("textarea[name='script_body.0']", "#!/bin/sh\necho made in the browser\n")
    page.click("#save-button")
    error = page.locator("#error-toml")
    error.wait_for()
    assert "job.toml: timeout: must be a positive number of seconds, got 'soon'" in (
        error.inner_text()
    )
    assert page.input_value("input[name=name]") == "from-web"  # the form keeps what was typed
    assert not (home.jobs / "from-web").exists()
    shot(page, "jobs-01-new-with-error")

    page.fill("#toml", 'description = "made in the browser"\ntimeout = 60\n')
    page.press("input[name=name]", "Enter")  # Enter saves: it never re-proposes over the edits
    page.wait_for_url("**/jobs/from-web")
    assert "made in the browser" in page.locator("h1 + p").inner_text()
    assert (home.jobs / "from-web" / "build.sh").read_text().endswith("echo made in the browser\n")

    page.click("#edit-job")
    page.wait_for_url("**/jobs/from-web/edit")
    assert page.input_value("input[name='script_name.0']") == "build.sh"
    page.fill("input[name='script_name.1']", "../escape.sh")
    page.fill("textarea[name='script_body.1']", "echo tested\n")
    page.click("#save-button")
    page.get_by_text("bad script name '../escape.sh'").wait_for()
    page.fill("input[name='script_name.1']", "test.sh")
    page.fill("#toml", 'stages = ["build", "test"]\n')
    page.click("#save-button")
    page.wait_for_url("**/jobs/from-web")
    assert sorted(p.name for p in (home.jobs / "from-web").iterdir()) == [
        "build.sh",
        "job.toml",
        "test.sh",
    ]
    assert (home.jobs / "from-web" / "test.sh").read_text() == "#!/usr/bin/env bash\necho tested\n"
    build = home.trigger("from-web")
    assert home.wait_for([build])[0]["status"] == "success"
    assert "tested" in home.log(build)

    page.click("#edit-job")
    page.click("#delete-link")
    page.wait_for_url("**/jobs/from-web/delete")
    shot(page, "jobs-02-delete-confirm")
    page.click("#confirm-delete")  # without typing the name: refused
    page.locator("#form-error").wait_for()
    assert (home.jobs / "from-web").is_dir()
    page.fill("input[name=confirm]", "from-web")
    page.click("#confirm-delete")
    page.wait_for_url(site.url + "/")
    assert not (home.jobs / "from-web").exists() and home.builds() == []
    assert page.get_by_role("link", name="from-web").count() == 0


def test_propose_a_job_from_a_repository_then_save_and_build_it(browser, home, serve, tmp_path):  # noqa: F811
    repo = Repo(tmp_path)
    flow = "jobs:\n  check:\n    steps:\n      - run: echo proposed-and-built\n"
    repo.commit({".github/workflows/ci.yml": flow, "README.md": "x\n"})
    site = serve()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(site.url + "/")
    page.click("#new-job")
    page.fill("input[name=repo]", str(repo.bare))
    page.fill("input[name=branch]", "main")
    page.click("#detect-button")
    page.locator("#detect-notes").get_by_text("Detected: GitHub workflow").wait_for()
    assert f'repo = "{repo.bare}"' in page.input_value("#toml")
    assert page.input_value("input[name='script_name.0']") == "check.sh"
    assert not (home.jobs).joinpath("detected").exists()  # nothing is saved or run yet
    shot(page, "jobs-03-proposed")
    page.fill("input[name=name]", "detected")
    page.click("#save-button")
    page.wait_for_url("**/jobs/detected")
    build = home.trigger("detected", "--branch", "main")
    assert home.wait_for([build])[0]["status"] == "success", home.log(build)
    assert "proposed-and-built" in home.log(build)
