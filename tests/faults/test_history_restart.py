"""History that lasts, with real processes: a `dcnr orchestrator` SIGKILLed mid-session and started again still
holds every step it recorded (the HTTP API and `dcnr session listen --from-step` replay them), the steps trained
again after the restore equal those trained before, and PNodes started with --metrics-port serve metrics that
parse and add up."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tiny_lm_sessions import NETWORK, TEXTS
from typer.testing import CliRunner

from dcnr.cli.main import app
from dcnr.client import StepEvent
from dcnr.cluster import ORCHESTRATOR, LocalCluster, free_port
from dcnr.data.vocab import train_vocabulary
from dcnr.errors import DcnrError

STEPS, EVERY, KILL_AT = 12, 4, 6
TIMEOUT = 240.0


@pytest.fixture()
def fleet(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path, ["p0", "p1"], heartbeat_interval=1.0, step_timeout=60, http=True)
    try:
        yield cluster
    finally:
        cluster.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, by name and labels."""
    with urllib.request.urlopen(url, timeout=30) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def cli(fleet: LocalCluster, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"DCNR_CONFIG": str(fleet.admin_config), "COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    return result.stdout


def listen_until_completed(fleet: LocalCluster, session: str, from_step: int) -> list[StepEvent]:
    """Every event of one listen from `from_step`, started again only if the orchestrator cut it off."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert time.monotonic() < deadline, f"the session did not complete in time\n{fleet.log(ORCHESTRATOR, 6000)}"
        heard: list[StepEvent] = []
        try:
            for ev in fleet.client.listen_session(session, timeout=TIMEOUT, from_step=from_step):
                heard.append(ev)
                assert ev.state != "failed", ev.error
                if ev.state == "completed":
                    return heard
        except DcnrError:
            time.sleep(0.5)  # still starting: listen again


@pytest.mark.slow
def test_history_outlives_a_sigkilled_orchestrator_and_pnodes_serve_metrics(fleet: LocalCluster) -> None:
    fleet.start_orchestrator()
    ports = {name: free_port() for name in fleet.pnode_names}
    for name, port in ports.items():
        fleet.start_pnode(name, "--metrics-port", str(port))
    fleet.wait_for_pnodes(fleet.pnode_names)
    c = fleet.client
    c.upload_vocabulary("v", train_vocabulary(TEXTS, 300).to_str())
    c.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
    c.create_network(NETWORK, name="lm")
    session = c.create_session("lm", "d", STEPS, batch_size=4, micro_batches=2, seed=3, checkpoint_every=EVERY,
                               start=True).id
    for ev in c.listen_session(session, timeout=TIMEOUT):
        assert ev.state == "running", ev
        if ev.step >= KILL_AT:
            break
    before = {ev.step: ev for ev in c.session_history(session)}
    assert set(before) >= set(range(1, KILL_AT + 1))
    fleet.kill(ORCHESTRATOR)
    time.sleep(1.0)
    fleet.start_orchestrator()  # same state, same ports: it resumes the session from its checkpoint at step 4

    heard = listen_until_completed(fleet, session, from_step=1)
    steps = [ev.step for ev in heard]
    assert steps[:EVERY] == list(range(1, EVERY + 1)) and steps[-1] == STEPS and set(steps) == set(range(1, STEPS + 1))
    for ev in heard[:EVERY]:  # kept through the kill, exactly as recorded
        assert (ev.loss, ev.at, ev.learning_rates) == (before[ev.step].loss, before[ev.step].at,
                                                       before[ev.step].learning_rates)
    after = c.session_history(session)
    assert [ev.step for ev in after] == list(range(1, STEPS + 1))
    for step, ev in before.items():  # kept, or trained again from the checkpoint to the same loss
        assert after[step - 1].loss == ev.loss
    kept = [step for step in sorted(before) if after[step - 1].at == before[step].at]
    assert kept == list(range(1, len(kept) + 1)) and len(kept) >= EVERY and len(kept) % EVERY == 0
    assert len(kept) < len(before)  # the steps past the checkpoint were trained again

    with urllib.request.urlopen(f"{fleet.http_url}/api/sessions/{session}/history?from_step=1", timeout=30) as r:
        served = json.loads(r.read())
    assert [(h["step"], h["loss"]) for h in served] == [(ev.step, ev.loss) for ev in after]
    replayed = [json.loads(line) for line in cli(fleet, "session", "listen", session, "--from-step", "1",
                                                  "--json").splitlines()]
    assert [e["step"] for e in replayed] == list(range(1, STEPS + 1)) and replayed[-1]["state"] == "completed"
    rows = list(csv.DictReader(io.StringIO(cli(fleet, "session", "history", session, "--csv"))))
    assert [(int(r["step"]), float(r["loss"])) for r in rows] == [(ev.step, ev.loss) for ev in after]
    with urllib.request.urlopen(f"{fleet.http_url}/api/events", timeout=30) as r:
        events = json.loads(r.read())
    joined = [e for e in events if e["kind"] == "joined"]
    assert {e["pnode"] for e in joined} == set(fleet.ids.values()) and len(joined) >= 2
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    deadline = time.monotonic() + TIMEOUT  # a PNode whose beats backed off past the restart was marked dead there
    while sum(p.state == "alive" for p in c.list_pnodes()) < 2:  # and registers again at its next beat
        assert time.monotonic() < deadline, f"a PNode did not come back\n{fleet.log(ORCHESTRATOR, 6000)}"
        time.sleep(0.5)
    orchestrator = scrape(f"{fleet.http_url}/metrics")
    assert orchestrator[("dcnr_fleet_pnodes", (("state", "alive"),))] == 2
    assert orchestrator[("dcnr_session_step_duration_seconds_count", (("network", "lm"),))] >= STEPS - EVERY
    assert orchestrator[("dcnr_session_loss", (("session", session),))] == after[-1].loss
    hosting = {}
    for name, port in ports.items():
        pnode = scrape(f"http://127.0.0.1:{port}/metrics")
        assert pnode[("dcnr_pnode_compute_seconds_total", ())] > 0, name
        assert pnode[("dcnr_pnode_idle_seconds_total", ())] > 0, name
        assert pnode[("dcnr_pnode_sent_bytes_total", ())] > 0 and pnode[("dcnr_pnode_received_bytes_total", ())] > 0
        assert pnode[("dcnr_pnode_sent_hops_total", ())] > 0 and pnode[("dcnr_pnode_received_hops_total", ())] > 0
        # after the restart the PNode that registered again first may have been given every VNode
        hosting[name] = (pnode[("dcnr_pnode_vnodes", ())], pnode[("dcnr_pnode_vnode_memory_bytes", ())])
        assert (hosting[name][0] > 0) == (hosting[name][1] > 0), name
        assert 0 <= pnode[("dcnr_pnode_heartbeat_age_seconds", ())] < 30
        assert pnode[("dcnr_pnode_relayed", ())] == 0 and pnode[("dcnr_pnode_hops_in_flight", ())] >= 0
        assert {labels for metric, labels in pnode if metric == "dcnr_pnode_queue_depth"} == {
            (("queue", q),) for q in ("compute", "outbox", "reports", "hashing")}

    assert sum(count for count, _ in hosting.values()) > 0  # the network's VNodes, wherever they went
