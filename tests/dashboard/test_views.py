"""The dashboard in Chromium against a stand-in orchestrator (`fake_orchestrator`): what anonymous viewers see,
how a pasted token enables actions and travels with them, and a private orchestrator.

States that a real cluster shows only after much work (a quarantined PNode, a relayed one, a failed check,
tokens of each role) are canned here; `test_dashboard_cluster.py` drives the same page against real processes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_pages import paste_token, points, row, wait_for_points
from fake_orchestrator import OPERATOR, RESEARCHER, FakeOrchestrator
from playwright.sync_api import Page, expect

from dcnr.dashboard import STATIC


@pytest.fixture()
def fake() -> Iterator[FakeOrchestrator]:
    server = FakeOrchestrator().start()
    try:
        yield server
    finally:
        server.stop()


def test_anonymous_viewers_see_every_view_and_no_action(page: Page, fake: FakeOrchestrator, screenshots: Path) -> None:
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((fake.url, "data:")) else None)
    page.goto(fake.url)

    fleet = page.locator("#pnodes tbody tr")
    expect(fleet).to_have_count(4)
    mallory = row(page, "mallory")
    expect(mallory).to_have_attribute("data-state", "quarantined")
    expect(mallory).to_contain_text("until")
    expect(mallory).to_contain_text("2 charges")
    expect(row(page, "p2").locator("td.connection")).to_have_text("relayed via r-9f3a")
    expect(row(page, "p0")).to_contain_text("trusted")
    expect(row(page, "p1")).to_contain_text("16 cores · 32.0 GiB · cpu")
    expect(page.locator("#relay-table tbody tr")).to_have_count(1)
    expect(page.locator("#event-table")).to_contain_text("quarantined")
    expect(page.locator("#validation-table tr.verdict-fail")).to_contain_text("mallory")

    # nothing to click and no column for it without a token
    expect(page.locator("button.action")).to_have_count(0)
    expect(page.locator("#pnodes th.actions")).to_be_hidden()

    # the charts gain points as the session trains
    wait_for_points(page, "#loss-chart", wait_for_points(page, "#loss-chart", 3))
    assert points(page, "#lr-chart") > 0 and points(page, "#throughput-chart") > 0

    # the graph: every VNode, coloured by the PNode that hosts it
    graph = page.locator("#graph")
    expect(graph).to_have_attribute("data-nodes", "5")
    expect(graph).to_have_attribute("data-edges", "4")
    expect(page.locator("#graph-legend li")).to_have_text(["p0 (2)", "p1 (1)", "p2 (2)"])

    # the step timeline: the newest step, then an older one chosen by hand
    timeline = page.locator("#timeline-chart")
    expect(timeline).to_have_attribute("data-spans", "25")  # 2 micro-batches × 5 VNodes × fwd and bwd + 5 updates
    expect(timeline).to_have_attribute("data-wire", "4")
    expect(page.locator("#timeline-summary")).to_contain_text("on the wire")
    older = page.locator("#timeline-step option").nth(2).get_attribute("value")
    page.select_option("#timeline-step", older)
    expect(timeline).to_have_attribute("data-step", str(older))
    page.screenshot(path=screenshots / "views-anonymous.png", full_page=True)

    # the libraries in the bundle report the lockfile's versions
    lock = json.loads((STATIC.parent / "web" / "package-lock.json").read_text())["packages"]
    for attribute, package in (("data-chartjs", "chart.js"), ("data-cytoscape", "cytoscape")):
        expect(page.locator("#about")).to_have_attribute(attribute, lock[f"node_modules/{package}"]["version"])

    fake.kill("p1")
    expect(row(page, "p1")).to_have_attribute("data-state", "dead")
    expect(page.locator("#event-table")).to_contain_text("dead")
    assert not [r for r in fake.requests if r.authorization], "an anonymous viewer sent a token"
    assert not outside, f"the dashboard reached beyond its orchestrator: {outside}"


def test_actions_need_a_token_that_is_sent_with_them(page: Page, fake: FakeOrchestrator, screenshots: Path) -> None:
    page.goto(fake.url)
    expect(page.locator("#pnodes tbody tr")).to_have_count(4)
    expect(page.locator("button.action")).to_have_count(0)

    paste_token(page, RESEARCHER)
    assert page.evaluate("sessionStorage.getItem('dcnr.token')") == RESEARCHER
    suspend = page.locator('#session-table tr[data-session="s-1"] button[data-action="suspend"]')
    suspend.click()
    expect(page.locator('#session-table tr[data-session="s-1"]')).to_have_attribute("data-state", "suspended")
    expect(page.locator("#notice")).to_contain_text("suspend s-1: done")
    posted = [r for r in fake.requests if r.method == "POST"]
    assert [(r.path, r.authorization) for r in posted] == [("/api/sessions/s-1/suspend", f"Bearer {RESEARCHER}")]
    assert all(r.authorization == f"Bearer {RESEARCHER}" for r in fake.requests[-5:])  # reads carry it too

    # a researcher may not trust PNodes: the orchestrator says so, the page shows it
    row(page, "p1").locator('button[data-action="trust"]').click()
    expect(page.locator("#notice")).to_contain_text("403")
    expect(row(page, "p1")).to_contain_text("untrusted")

    # the token lives in sessionStorage: a reload keeps it, forgetting it removes it and the buttons
    page.reload()
    expect(page.locator("#auth-signed-in")).to_be_visible()
    expect(page.locator('#session-table button[data-action="resume"]')).to_be_enabled()
    page.click("#token-forget")
    expect(page.locator("button.action")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('dcnr.token')") is None

    paste_token(page, "not-a-token")
    page.locator('#session-table button[data-action="resume"]').click()
    expect(page.locator("#notice")).to_contain_text(re.compile(r"401.*refused"))
    assert fake.session["state"] == "suspended"

    page.click("#token-forget")
    paste_token(page, OPERATOR)
    row(page, "mallory").locator('button[data-action="release"]').click()
    expect(row(page, "mallory")).to_have_attribute("data-state", "alive")
    row(page, "p1").locator('button[data-action="trust"]').click()
    expect(row(page, "p1").locator('button[data-action="untrust"]')).to_be_visible()
    page.locator('#session-table button[data-action="resume"]').click()
    expect(page.locator('#session-table tr[data-session="s-1"]')).to_have_attribute("data-state", "running")
    page.screenshot(path=screenshots / "views-operator.png", full_page=True)


def test_a_private_orchestrator_asks_for_a_token(page: Page, fake: FakeOrchestrator) -> None:
    fake.private = True
    page.goto(fake.url)
    expect(page.locator("#banner")).to_contain_text("private")
    expect(page.locator("#server-status")).to_have_attribute("data-state", "private")
    expect(page.locator("#pnodes tbody tr")).to_have_count(0)
    paste_token(page, OPERATOR)
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#pnodes tbody tr")).to_have_count(4)


def test_charts_of_a_session_rolled_back_start_again_from_its_checkpoint(page: Page, fake: FakeOrchestrator) -> None:
    page.goto(fake.url)
    shown = wait_for_points(page, "#loss-chart", 15)
    fake.roll_back(5)
    deadline = time.monotonic() + 15
    while points(page, "#loss-chart") >= shown:  # redrawn from the start, without the forgotten steps
        assert time.monotonic() < deadline, "the charts kept the steps the session forgot"
        page.wait_for_timeout(200)
    assert wait_for_points(page, "#loss-chart", 5) >= 6
