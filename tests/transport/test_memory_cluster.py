"""The step protocol end to end through the in-memory transport: an orchestrator's fleet and driver
and several PNode runtimes in this process, no gRPC. Fast, and exactly the same protocol logic."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
import yaml

import dcnr
from dcnr.artifact import written_state
from dcnr.orchestrator import checkpoints
from dcnr.orchestrator.driver import Driver, Inbox, Members, StateLost
from dcnr.orchestrator.fleet import Fleet
from dcnr.orchestrator.store import NetworkRecord, SQLiteStore
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.proto.version import VERSION_TEXT
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.memory import MemoryConnector, MemoryFabric, MemoryHopTransport, MemoryOrchestratorLink
from dcnr.transport.messages import Membership, Report, Run

TEXT = yaml.safe_dump(transformer_lm("mem", blocks=2, heads=2, head_dim=4, dim=8, seq_len=6, vocab_size=40,
                                     dropout=0.1), sort_keys=False)
SPEC = dcnr.parse_network(TEXT)


class CountingMembers(Members):
    """The orchestrator's membership service, counting the reports each PNode sends."""

    def __init__(self, fleet: Fleet, inbox: Inbox) -> None:
        super().__init__(fleet, inbox)
        self.done: dict[str, int] = {}

    def deliver(self, pnode: str, reports: Sequence[Report]) -> None:
        self.done[pnode] = self.done.get(pnode, 0) + sum(r.kind == "done" for r in reports)
        super().deliver(pnode, reports)


class MemoryCluster:
    def __init__(self, state: Path, pnodes: int) -> None:
        self.fabric = MemoryFabric()
        self.store = SQLiteStore(state / "state.sqlite")
        self.fleet = Fleet(self.store, MemoryConnector(self.fabric), heartbeat_interval=3600)
        self.inbox = Inbox()
        self.driver = Driver(self.store, self.fleet, self.inbox, timeout=60)
        self.members = CountingMembers(self.fleet, self.inbox)
        self.runtimes = [self.add(f"p{i}") for i in range(pnodes)]
        self.store.create_network(NetworkRecord("mem", TEXT))

    def add(self, pnode: str) -> PNodeRuntime:
        runtime = PNodeRuntime(pnode, MemoryHopTransport(self.fabric), MemoryOrchestratorLink(self.members))
        runtime.start()
        self.fabric.attach(f"mem:{pnode}", runtime)
        self.members.register(Membership(pnode, f"mem:{pnode}", {"memory_budget_bytes": 2**30}, VERSION_TEXT))
        return runtime

    def stop(self) -> None:
        for r in self.runtimes:
            r.stop()
        self.driver.close()
        self.fleet.close()
        self.store.close()


@pytest.fixture()
def make(tmp_path: Path) -> Iterator[type[MemoryCluster]]:
    made: list[MemoryCluster] = []

    def build(pnodes: int) -> MemoryCluster:
        c = MemoryCluster(tmp_path / f"c{len(made)}", pnodes)
        made.append(c)
        return c

    yield build  # type: ignore[misc]
    for c in made:
        c.stop()


def batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return {"tokens": torch.randint(0, 40, (4, 6), generator=g), "targets": torch.randint(0, 40, (4, 6), generator=g)}


@pytest.mark.parametrize("pnodes", [1, 3])
def test_training_through_the_protocol_is_bit_identical_to_the_local_executor(make: type[MemoryCluster],
                                                                               pnodes: int) -> None:
    """Dropout and 2 micro-batches, 4 steps: the same losses and parameters, however VNodes are spread;
    one "done" report per PNode per micro-batch; colocated hops never leave their PNode."""
    cluster = make(pnodes)
    local = dcnr.LocalExecutor(SPEC)
    for step in range(4):
        want = local.train_step(batch(step), micro_batches=2)
        got, new_step, skipped, _ = cluster.driver.train_step("mem", batch(step), micro_batches=2)
        assert got == want and new_step == step + 1 and not skipped
    placement = cluster.store.placements("mem")
    hosts = sorted(set(placement.values()))
    assert len(hosts) == pnodes
    assert cluster.members.done == dict.fromkeys(hosts, 4 * 2)  # per PNode per micro-batch, nothing more
    net = cluster.driver.network("mem")
    states = {}
    for nid, pid in placement.items():
        tensors, step = cluster.fleet.client(pid).save("mem", nid)
        assert step == 4
        states[nid] = tensors
    got = {f"{nid}.{k[len('param/'):]}": t for nid, state in written_state(net.plan, states).items()
           for k, t in state.items() if k.startswith("param/")}
    want_params = local.parameters()
    assert set(got) == set(want_params) and all(torch.equal(got[k], v) for k, v in want_params.items())
    assert len(net.spec.nodes) < len(SPEC.nodes)  # the attention heads ran fused
    crossing = sum(1 for e in net.spec.edges if placement[e.src] != placement[e.dst])
    inputs = sum(1 for b in net.spec.inputs if b.node_id in net.router.needed(Run("mem", "probe", 0, "train")))
    if pnodes == 1:
        assert crossing == 0 and cluster.fabric.hops_sent == inputs * 2 * 4  # only the orchestrator's inputs
        assert all(r.stats["hops_sent"] == 0 for r in cluster.runtimes)
    else:
        assert crossing > 0 and sum(r.stats["hops_sent"] for r in cluster.runtimes) > 0


def test_a_placement_change_reaches_the_pnodes_before_the_next_run(make: type[MemoryCluster]) -> None:
    """When a PNode leaves, its VNodes' trained state is gone: nothing runs until the state is put back.
    Then the survivors hold the new placement (a new version), VNodes that moved away are dropped where
    they were, and the next step trains on it exactly as one process would."""
    cluster = make(3)
    cluster.driver.train_step("mem", batch(0))
    net = cluster.driver.network("mem")
    saved = checkpoints.gather(cluster.driver, net)
    before = cluster.driver.deploy(net)
    gone = cluster.runtimes[2]
    cluster.fabric.detach("mem:p2")
    cluster.fleet.unregister("p2")
    gone.stop()
    cluster.runtimes.remove(gone)
    with pytest.raises(StateLost, match="lost the state of VNode"):  # never trained on rebuilt parameters
        cluster.driver.train_step("mem", batch(1))
    checkpoints.restore(cluster.driver, net, saved, net.step)
    costs, step, _, _ = cluster.driver.train_step("mem", batch(1))
    after = cluster.driver.deploy(net)
    assert after.version > before.version and "p2" not in after.pnodes() and step == 2
    assert all(v.id in {n for n, p in after.assignments.items() if p == r.id}
               for r in cluster.runtimes for _, v in r.host.local("mem"))
    local = dcnr.LocalExecutor(SPEC)
    local.train_step(batch(0))
    assert costs == local.train_step(batch(1))


def test_a_step_that_fails_is_abandoned_everywhere_and_can_be_retried(make: type[MemoryCluster]) -> None:
    """A bad input fails the step with the VNode's reason; nothing half-done poisons the retry."""
    cluster = make(2)
    bad = batch(0)
    bad["tokens"] = bad["tokens"] + 1000  # ids beyond the vocabulary: the embedder refuses them
    with pytest.raises(dcnr.errors.Aborted, match="token id out of range"):
        cluster.driver.train_step("mem", bad)
    local = dcnr.LocalExecutor(SPEC)
    want = local.train_step(batch(0))
    got, step, _, _ = cluster.driver.train_step("mem", batch(0))
    assert got == want and step == 1
