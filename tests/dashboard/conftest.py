"""Browser fixtures: headless Chromium (the Debian package, driven by Playwright) and where screenshots go.

Nothing is skipped: without /usr/bin/chromium the tests fail and say how to install it. Every wait is
bounded (`WAIT_MS` for each Playwright wait and expectation unless a test passes its own). Screenshots are written to
`<pytest basetemp>/dashboard-screenshots` (the run's basetemp, also when pytest-xdist workers write them),
printed at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 15_000
FOLDER = "dashboard-screenshots"  # tests/conftest.py prints where it is at the end of the run
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the dashboard tests drive Debian's chromium package, which .ci/run "
                    "installs (as root: apt-get install -y --no-install-recommends chromium)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (its own sessionStorage) and page; JavaScript errors fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:  # a worker's basetemp is <the run's basetemp>/popen-gwN
        base = base.parent
    folder = base / FOLDER
    folder.mkdir(exist_ok=True)
    return folder

