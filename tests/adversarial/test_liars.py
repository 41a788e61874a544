"""Lying PNodes are found, quarantined, and change nothing in the result (SPEC §12, validation).

One fleet serves the module: an embedded orchestrator and three honest `dcnr pnode` processes
(p0..p2). Each test adds liars (`liar.py`: real `dcnr pnode` processes whose work is falsified),
trains a fresh copy of a small LM under full validation, and checks that the final parameters
are bit-identical to an all-honest `LocalExecutor` run, that every liar is quarantined, and
that no honest PNode was charged. An honest run of more than 1,000 verified units comes first
and must raise no accusation at all.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import dcnr
from dcnr.cluster import LocalCluster
from dcnr.data.dataset import TokenDataset
from dcnr.data.vocab import train_vocabulary
from dcnr.orchestrator.placement import units
from dcnr.spec.transformer import transformer_lm

HERE = Path(__file__).resolve().parent
TEXTS = [f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13} times." for i in range(200)]
STEPS, BATCH, MICRO, SEED, EVERY = 8, 4, 2, 5, 2
HONEST = ("p0", "p1", "p2")
TIMEOUT = 300.0


def network(name: str) -> str:
    doc = transformer_lm(name, blocks=1, heads=2, head_dim=8, dim=16, seq_len=8, vocab_size=300, dropout=0.1)
    doc["validation"] = "full"
    return yaml.safe_dump(doc, sort_keys=False)


class Fleet(LocalCluster):
    """PNodes named `liar-<mode>-<n>` run `liar.py <mode>`; the others are plain `dcnr pnode` processes."""

    colluders: str = ""

    def command(self, address: str, name: str) -> list[str]:
        args = ["pnode", "--orchestrator", address, "--name", name, "--state-dir", str(self.pnode_dir(name)),
                "--ca-fingerprint", self.ca_fingerprint, "--threads", "1",
                "--heartbeat-interval", str(self.heartbeat_interval)]
        if name.startswith("liar-"):
            return [sys.executable, str(HERE / "liar.py"), name.split("-")[1], *args]
        return [sys.executable, "-m", "dcnr.cli.main", *args]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    cluster = Fleet(tmp_path_factory.mktemp("liars"), list(HONEST), heartbeat_interval=2.0, step_timeout=120,
                    embedded=True, env=None)
    cluster.pnode_command = cluster.command
    try:
        cluster.start()
        cluster.client.upload_vocabulary("v", train_vocabulary(TEXTS, 300).to_str())
        cluster.client.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def reference(fleet: Fleet) -> dict[str, torch.Tensor]:
    """The all-honest result: the LocalExecutor trained on the same batches."""
    ex = dcnr.LocalExecutor(dcnr.parse_network(network("small")))
    ds: TokenDataset = fleet.orch.data.dataset("d")
    for step in range(STEPS):
        x, y = ds.batch(SEED, step, BATCH, 8)
        ex.train_step({"tokens": x, "targets": y}, micro_batches=MICRO)
    return ex.parameters()


def train(fleet: Fleet, name: str, steps: int = STEPS, expect_hosts: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Train network `name` (a copy of the small LM) in a session; returns its exported parameters."""
    client = fleet.client
    client.create_network(network(name))
    if expect_hosts:  # the liars first, then the honest PNodes, unit by unit: each gets a fair part
        spec = fleet.orch.driver.network(name).spec
        order = [fleet.ids[n] for n in (*expect_hosts, *HONEST)]
        fleet.orch.store.set_placements(name, {v: order[i % len(order)] for i, unit in enumerate(units(spec))
                                               for v in unit})
    placement = fleet.orch.fleet.placement(fleet.orch.driver.network(name).spec, batch_size=BATCH // MICRO)
    hosts = {fleet.name_of(p) for p in placement.values()}
    assert set(expect_hosts) <= hosts, f"the liars must host part of the network; it is placed on {sorted(hosts)}"
    session = client.create_session(name, "d", steps, BATCH, MICRO, SEED, checkpoint_every=EVERY)
    client.start_session(session.id)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        state = next(s for s in client.list_sessions() if s.id == session.id)
        if state.state in ("completed", "failed"):
            break
        fleet.check()
        time.sleep(0.5)
    events = fleet.orch.standings.events(session=session.id, limit=10_000)
    print(f"{name}: {dict(collections.Counter(e.verdict for e in events))}")
    for e in events:
        if e.verdict != "pass":
            print(f"  step {e.step} {e.unit}: {e.verdict} accused={fleet.name_of(e.accused)} "
                  f"verifier={fleet.name_of(e.verifier)} referee={fleet.name_of(e.referee)} {e.detail}")
    assert state.state == "completed", state
    out = fleet.state_dir / f"{name}.safetensors"
    client.export_network(name, out)
    return {k: v for k, v in load_file(out).items() if not k.startswith("optim/")}


def assert_honest_result(params: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert set(params) == set(reference)
    for key, value in reference.items():
        assert torch.equal(params[key], value), f"{key} differs from the all-honest run"


def assert_judged(fleet: Fleet, liars: tuple[str, ...]) -> None:
    standings = fleet.orch.standings
    for liar in liars:
        assert standings.quarantined(fleet.ids[liar]), f"{liar} was not quarantined"
    for name in HONEST:
        assert standings.get(fleet.ids[name]).charges == 0, f"honest {name} was charged"


def test_an_honest_fleet_of_more_than_1000_verified_units_raises_no_accusation(
        fleet: Fleet, reference: dict[str, torch.Tensor]) -> None:
    params = train(fleet, "honest", steps=60)
    events = fleet.orch.standings.events(network="honest", limit=10_000)
    verdicts = collections.Counter(e.verdict for e in events)
    assert verdicts["pass"] >= 1000, verdicts
    assert set(verdicts) == {"pass"}, verdicts
    assert all(fleet.orch.standings.get(fleet.ids[n]).charges == 0 for n in HONEST)
    assert params.keys() == reference.keys()


@pytest.mark.parametrize("mode", ["noise", "scale", "sometimes", "update", "uncommitted", "accuse"])
def test_one_liar_among_honest_pnodes_is_quarantined_and_changes_nothing(
        fleet: Fleet, reference: dict[str, torch.Tensor], mode: str) -> None:
    liar = f"liar-{mode}-1"
    fleet.start_pnode(liar)
    fleet.wait_for(lambda: liar in fleet.alive(), f"{liar} to join")
    try:
        params = train(fleet, f"net-{mode}", expect_hosts=(liar,))
        assert_honest_result(params, reference)
        assert_judged(fleet, (liar,))
    finally:
        fleet.kill(liar)


def test_two_colluding_liars_with_one_trusted_pnode_are_both_quarantined(
        fleet: Fleet, reference: dict[str, torch.Tensor]) -> None:
    liars = ("liar-collude-1", "liar-collude-2")
    fleet.env = {**os.environ, "DCNR_COLLUDERS": ",".join(fleet.pnode_id(n) for n in liars)}
    fleet.orch.standings.trust(fleet.ids["p0"])
    for name in liars:
        fleet.start_pnode(name)
    fleet.wait_for(lambda: set(liars) <= fleet.alive(), "the colluders to join")
    try:
        params = train(fleet, "net-collude", expect_hosts=liars)
        assert_honest_result(params, reference)
        assert_judged(fleet, liars)
    finally:
        for name in liars:
            fleet.kill(name)
        fleet.orch.standings.trust(fleet.ids["p0"], False)
