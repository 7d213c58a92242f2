"""A person in a real headless Chromium against `lightci serve` on loopback.

Open the dashboard, log in with the token, trigger a build from the job's form,
watch its log lines arrive live on the build page, cancel another one. The
screenshots land in test-output/screenshots/ for a person to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
TOKEN = "browser-token-for-tests"

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no {CHROMIUM}")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def site(home, serve):
    """An app job whose build stops half-way until home/gate exists, and two more jobs."""
    gate = home.path / "gate"
    home.job(
        "app",
        f"""
        description = "Android and iOS builds per flavor"
        key = "{{flavor}}_{{branch}}"
        branches = ["main", "release/*"]
        [params]
        flavor = "dev"
        platform = "android"
        [env]
        GATE = "{gate}"
        """,
        build="""
        echo "building $FLAVOR for $PLATFORM"
        printf '\\033[32mgreen ok\\033[0m and \\033[1;31mbold red\\033[0m\\n'
        for i in 1 2 3; do echo "step $i of 6"; done
        while [ ! -e "$GATE" ]; do sleep 0.02; done
        for i in 4 5 6; do echo "step $i of 6"; done
        echo "<b>not bold</b> & done"
        """,
    )
    home.job("sleepy", 'description = "waits a long time"\n', build="echo sleeping\nsleep 60\n")
    home.job("lib", "", build="echo lib\n")
    SHOTS.mkdir(parents=True, exist_ok=True)
    return serve(env={"LIGHTCI_TOKEN": TOKEN})


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_log_in_trigger_from_the_form_and_watch_the_log_arrive_live(browser, site, home):
    home.trigger("lib")
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(site.url + "/")
    page.get_by_role("link", name="app", exact=True).wait_for()
    assert page.locator("#slots").inner_text().endswith("/2")
    shot(page, "01-dashboard")

    page.click("#login-link")
    page.fill("input[name=token]", "wrong")
    page.click("button[type=submit]")
    page.get_by_text("That is not the token.").wait_for()
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.get_by_role("button", name="Log out").wait_for()

    page.goto(site.url + "/jobs/app")
    assert page.input_value("input[name='param.flavor']") == "dev"
    page.fill("input[name=branch]", "main")
    page.fill("input[name='param.flavor']", "prod")
    shot(page, "02-job-form")
    page.click("#trigger-form button[type=submit]")
    page.wait_for_url("**/builds/*")
    build_id = int(page.url.rsplit("/", 1)[1])

    # The lines come while the build runs: the first half shows before the rest exists.
    page.locator("#log").get_by_text("step 3 of 6").wait_for(timeout=30000)
    page.wait_for_selector("#state.running", timeout=30000)
    shot(page, "03-build-live")
    (home.path / "gate").touch()
    page.locator("#log").get_by_text("not bold").wait_for(timeout=30000)
    page.wait_for_selector("#state.success", timeout=30000)
    log = page.locator("#log")
    assert "building prod for android" in log.inner_text()
    assert log.locator("span.fg-2", has_text="green ok").count() == 1  # ANSI colours
    assert log.locator("span.ansi-bold.fg-1", has_text="bold red").count() == 1
    assert log.locator("b").count() == 0  # log text is never markup
    assert (
        page.locator("#retry-form").is_visible() and not page.locator("#cancel-form").is_visible()
    )
    assert home.build(build_id)["status"] == "success"
    shot(page, "04-build-done")

    page.goto(site.url + "/jobs/app")
    assert page.locator("svg.trend rect.bar.success").count() == 1
    shot(page, "05-job-history")


def test_a_queued_build_s_page_follows_the_queue_until_it_starts(browser, site, home):
    """The queue moves with no state change of the build: its page asks again."""
    home.configure(slots=0)
    first = home.trigger("app", "--branch", "main")  # waits on home/gate once running
    second = home.trigger("app", "--branch", "main")  # the same key: behind the first
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(site.url + f"/builds/{second}")
    waiting = page.locator('[data-outlook="waiting_for"]')
    assert waiting.inner_text() == "paused" and waiting.is_visible()
    assert page.locator('[data-outlook="position"]').inner_text() == "2 in the queue"
    home.configure(slots=2)  # the first runs; the second waits for its key now
    page.get_by_text(f"key busy (#{home.build(first)['number']})").wait_for(timeout=20000)
    assert page.locator('[data-outlook="position"]').inner_text() == "1 in the queue"
    (home.path / "gate").touch()
    page.wait_for_selector("#state.success", timeout=30000)
    waiting.wait_for(state="hidden", timeout=10000)
    assert not page.locator('[data-outlook="position"]').is_visible()


def test_cancel_a_running_build_from_its_page(browser, site, home):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(site.url + "/login?next=/jobs/sleepy")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url("**/jobs/sleepy")
    page.click("#trigger-form button[type=submit]")
    page.wait_for_url("**/builds/*")
    build_id = int(page.url.rsplit("/", 1)[1])
    page.locator("#log").get_by_text("sleeping").wait_for(timeout=30000)
    page.click("#cancel")
    page.wait_for_selector("#state.cancelled", timeout=30000)
    assert home.build(build_id)["status"] == "cancelled"
    assert page.locator("#error").inner_text() == "cancelled by user"
    shot(page, "06-build-cancelled")


def test_the_dashboard_s_refresh_leaves_the_keyboard_focus_where_it_was(browser, site, home):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(site.url + "/")
    link = page.get_by_role("link", name="lib", exact=True)
    link.focus()
    home.trigger("lib", "--branch", "refreshed")  # the next refresh has something new
    page.get_by_text("refreshed").wait_for(timeout=20000)
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/jobs/lib"


def test_the_dashboard_reads_well_on_a_phone(browser, site, home):
    for job in ("app", "lib"):
        home.trigger(job, "--branch", "main")
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(site.url + "/")
    page.get_by_role("link", name="lib", exact=True).wait_for()
    # Nothing sticks out sideways: the page is no wider than the phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # The dashboard keeps itself fresh: a build triggered elsewhere shows up unasked.
    home.trigger("lib", "--branch", "release/3.0")
    page.get_by_text("release/3.0").wait_for(timeout=20000)
    shot(page, "07-dashboard-phone")
    page.goto(site.url + "/jobs/app")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "08-job-phone")
    lib = max(b["id"] for b in home.builds() if b["job"] == "lib")
    home.wait_for([lib])
    page.goto(f"{site.url}/builds/{lib}")
    page.wait_for_selector("#log[data-done='1']")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "10-build-phone")


def test_a_huge_log_shows_its_last_part_and_links_the_raw_log(browser, site, home):
    build_id = home.trigger("lib")
    home.wait_for([build_id])
    row = home.build(build_id)
    log = home.path / "builds" / "lib" / str(row["number"]) / "log.txt"
    line = "compiling module {:07d}: a line of a usual length and colour \033[33mwarn\033[0m\n"
    with open(log, "w") as f:
        for i in range(0, 1_300_000, 1000):
            f.write("".join(line.format(j) for j in range(i, i + 1000)))
        f.write("the very last line\n")
    size_mb = log.stat().st_size / 1048576
    assert size_mb > 90  # the issue asks for 100 MB not to hang the browser
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(f"{site.url}/builds/{build_id}")
    page.wait_for_selector("#log[data-done='1']", timeout=30000)
    assert page.locator("#log .trimmed").inner_text().startswith("… showing the last 1.0 MB of")
    assert page.locator("#log").get_by_text("the very last line").is_visible()
    shown = page.evaluate("document.getElementById('log').textContent.split('\\n').length")
    assert shown < 20000  # the page holds a tail, not 100 MB
    assert page.locator("#raw-log").get_attribute("href") == f"/api/builds/{build_id}/log"
    shot(page, "09-huge-log")
