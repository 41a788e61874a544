"""What the dashboard tests read off the page: a PNode's row, a chart's point count (polled, bounded), and
pasting a token."""

from __future__ import annotations

import time

from playwright.sync_api import Locator, Page, expect


def row(page: Page, name: str) -> Locator:
    """The fleet table's row of the PNode called `name`."""
    return page.locator(f'#pnodes tbody tr[data-name="{name}"]')


def points(page: Page, chart: str) -> int:
    return int(page.locator(chart).get_attribute("data-points") or 0)


def wait_for_points(page: Page, chart: str, more_than: int, timeout: float = 15.0) -> int:
    """Wait (bounded) until `chart` shows more than `more_than` points; returns how many it shows.
    (Polled from here: the page's CSP rightly forbids the string evaluation `wait_for_function` uses.)"""
    deadline = time.monotonic() + timeout
    while (n := points(page, chart)) <= more_than:
        assert time.monotonic() < deadline, f"{chart} stayed at {n} points for {timeout:g} s"
        page.wait_for_timeout(200)
    return n


def paste_token(page: Page, token: str) -> None:
    page.fill("#token-input", token)
    page.click("#token-save")
    expect(page.locator("#auth-signed-in")).to_be_visible()
