"""The dashboard of a real cluster in Chromium: an orchestrator process serving HTTP and three PNode processes
(`dcnr.cluster.LocalCluster`, 1 s heartbeats) training the tiny LM.

The charts gain points while the session trains, the graph and the step timeline show where the VNodes run,
an operator's pasted token suspends and resumes the session, and a SIGKILLed PNode is marked dead in the
fleet view within 15 s (dead after 3 missed heartbeats, and the page polls every 2 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_pages import paste_token, points, row, wait_for_points
from playwright.sync_api import Page, expect
from tiny_lm_sessions import NETWORK, TEXTS

from dcnr.cluster import LocalCluster
from dcnr.data.vocab import train_vocabulary
from dcnr.security.config import ClientConfig

DEAD_WITHIN_MS = 15_000


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    fleet = LocalCluster(tmp_path / "cluster", 3, heartbeat_interval=1.0, step_timeout=60, http=True)
    try:
        client = fleet.start()
        client.upload_vocabulary("v", train_vocabulary(TEXTS, 300).to_str())
        client.create_dataset("code", "v", TEXTS, validation_fraction=0.1)
        client.create_network(NETWORK, name="tiny-lm")
        yield fleet
    finally:
        fleet.close()


@pytest.mark.slow
def test_the_dashboard_follows_a_training_cluster(page: Page, cluster: LocalCluster, screenshots: Path) -> None:
    session = cluster.client.create_session("tiny-lm", "code", 10_000, batch_size=4, micro_batches=2,
                                            checkpoint_every=0, start=True).id
    page.goto(cluster.http_url)
    expect(page.locator("#pnodes tbody tr[data-state=alive]")).to_have_count(3)
    expect(page.locator("#server-status")).to_have_attribute("data-state", "live")

    # the live charts gain points while the session trains
    shown = wait_for_points(page, "#loss-chart", 0, timeout=60)
    wait_for_points(page, "#loss-chart", shown + 1, timeout=30)
    assert points(page, "#lr-chart") > 0 and points(page, "#throughput-chart") > 0

    # the network's VNodes on their PNodes, and a step's timeline
    vnodes = len(cluster.client.inspect_network("tiny-lm").placements)  # the executed graph's (fused) VNodes
    expect(page.locator("#graph")).to_have_attribute("data-nodes", str(vnodes))
    expect(page.locator("#graph")).to_have_attribute("data-unplaced", "0")
    expect(page.locator("#timeline-chart")).not_to_have_attribute("data-spans", "0", timeout=30_000)
    page.screenshot(path=screenshots / "cluster-training.png", full_page=True)

    # anonymous viewers cannot act; the operator's token suspends and resumes the session
    expect(page.locator("button.action")).to_have_count(0)
    paste_token(page, ClientConfig.load(cluster.admin_config).token)
    page.locator(f'#session-table tr[data-session="{session}"] button[data-action="suspend"]').click()
    expect(page.locator(f'#session-table tr[data-session="{session}"]')).to_have_attribute(
        "data-state", "suspended", timeout=60_000)
    page.locator(f'#session-table tr[data-session="{session}"] button[data-action="resume"]').click()
    expect(page.locator(f'#session-table tr[data-session="{session}"]')).to_have_attribute("data-state", "running")
    wait_for_points(page, "#loss-chart", points(page, "#loss-chart"), timeout=60)

    cluster.kill("p2")
    killed = time.monotonic()
    expect(row(page, "p2")).to_have_attribute("data-state", "dead", timeout=DEAD_WITHIN_MS)
    print(f"p2 marked dead {time.monotonic() - killed:.1f} s after its SIGKILL")
    expect(page.locator("#event-table")).to_contain_text("dead")
    page.screenshot(path=screenshots / "cluster-pnode-dead.png", full_page=True)
