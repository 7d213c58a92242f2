"""In headless Chromium: a build's artifacts (listed, downloaded), its deliveries, the badge."""

from __future__ import annotations

import os

import pytest

from tests.conftest import wait_until
from tests.test_browser import CHROMIUM, SHOTS, browser  # noqa: F401 (the fixture)
from tests.test_statuses import FakeForge

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no {CHROMIUM}")


def test_a_person_downloads_an_artifact_and_sees_the_deliveries_and_the_badge(
    browser,  # noqa: F811
    home,
    serve,
):
    forge = FakeForge()
    try:
        home.job(
            "app",
            'artifacts = ["out/*.apk"]\n'
            f'[[notify]]\non = ["always"]\nwebhook = "{forge.url}/chat/secret-hook"\n',
            build="mkdir -p out && echo apk > out/app-release.apk\n",
        )
        server = serve()
        build = home.trigger("app", "--branch", "main")
        assert home.wait_for([build])[0]["status"] == "success"
        wait_until(lambda: forge.delivered("/chat/"), "the notification")
        page = browser.new_page()
        page.goto(f"{server.url}/builds/{build}")
        link = page.locator("#artifacts a", has_text="out/app-release.apk")
        with page.expect_download() as download:
            link.click()
        assert download.value.suggested_filename == "app-release.apk"
        assert open(download.value.path()).read() == "apk\n"
        deliveries = page.locator("#deliveries").inner_text()
        assert "webhook success" in deliveries and "sent" in deliveries
        assert "secret-hook" not in page.content()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "build-artifacts-deliveries.png"), full_page=True)
        page.goto(f"{server.url}/badge/app.svg?branch=main")
        assert page.locator("svg title").text_content() == "app: success"
        page.close()
    finally:
        forge.server.shutdown()
