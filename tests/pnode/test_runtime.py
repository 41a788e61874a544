"""The PNode work loop on its own: runs, per-PNode completion, duplicates, late and stale messages,
per-task timeouts, and what a PNode refuses."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import torch
import yaml
from pnode_doubles import RecordingLink

import dcnr
from dcnr.errors import Conflict, InvalidArgument, NotFound
from dcnr.pnode.runtime import PNodeRuntime, _Ledger
from dcnr.runtime.graph import backward_set
from dcnr.spec.passes import plan
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.memory import MemoryFabric, MemoryHopTransport
from dcnr.transport.messages import Hop, Placement, Run, network_digest
from dcnr.validation.digest import value_digest

TEXT = yaml.safe_dump(transformer_lm("rt", blocks=1, heads=2, head_dim=4, dim=8, seq_len=6, vocab_size=30,
                                     dropout=0.0))
SPEC = dcnr.parse_network(TEXT)
EXEC = plan(SPEC).spec  # the VNodes a PNode runs (attention heads fused)


def from_host(network: str, run: str, mb: int, op: str, vnode: str, slot: int, value: object,
              host: str = "me") -> Hop:
    """A hop as its rightful sender sends it: a network input from the orchestrator (""), anything else
    from `host`, the PNode that (in these tests) hosts the VNode at the edge's other end."""
    inputs_ = {(b.node_id, b.slot_id) for b in EXEC.inputs}
    sender = "" if op == "fwd" and (vnode, slot) in inputs_ else host
    return Hop(network, run, mb, op, vnode, slot, value, sender)  # type: ignore[arg-type]



def placement(version: int = 1, assignments: dict[str, str] | None = None, step: int = 0) -> Placement:
    return Placement("rt", TEXT, 0, network_digest(TEXT), version, step,
                     assignments or dict.fromkeys(EXEC.nodes, "me"), {"me": "mem:me", "other": "mem:other"})


def train_run(run_id: str = "r1", step: int = 0, micro_batches: int = 1, version: int = 1) -> Run:
    return Run("rt", run_id, step, "train", micro_batches, 1.0 / micro_batches, (), network_digest(TEXT), version)


@pytest.fixture()
def make() -> Iterator[Callable[..., tuple[PNodeRuntime, RecordingLink]]]:
    made: list[PNodeRuntime] = []

    def build(task_timeout: float = 300.0) -> tuple[PNodeRuntime, RecordingLink]:
        link = RecordingLink()
        runtime = PNodeRuntime("me", MemoryHopTransport(MemoryFabric()), link, task_timeout=task_timeout)
        runtime.start()
        made.append(runtime)
        return runtime, link

    yield build
    for r in made:
        r.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def inputs(run: Run, mb: int = 0) -> list[Hop]:
    tokens = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(mb))
    return [Hop("rt", run.id, mb, "fwd", "embedder", 0, tokens), Hop("rt", run.id, mb, "fwd", "loss", 1, tokens)]


def test_a_train_step_reports_its_cost_and_one_done_per_micro_batch(make: Callable[..., tuple[PNodeRuntime,
                                                                                              RecordingLink]]) -> None:
    runtime, link = make()
    assert runtime.place(placement()) == len(EXEC.nodes)
    run = train_run(micro_batches=2)
    runtime.begin_run(run)
    for mb in range(2):
        for hop in inputs(run, mb):
            assert runtime.submit(hop)
    assert not runtime.submit(inputs(run, 1)[1])  # a duplicate hop is refused at the door
    wait_for(lambda: sum(r.kind == "done" for r in link.reports) == 2)
    assert sorted(r.micro_batch for r in link.reports if r.kind == "done") == [0, 1]  # one per micro-batch
    assert [(r.vnode, r.micro_batch) for r in link.reports if r.kind == "output"] == [("loss", 0), ("loss", 1)]
    assert not [r for r in link.reports if r.kind == "failed"]
    assert runtime.stats["hops_sent"] == 0 and runtime.stats["local_hops"] > 0  # nothing left the process
    lrs, _ = runtime.apply_update("rt", 1, 1.0, True)
    assert set(lrs) == {v.id for _, v in runtime.host.local("rt") if v.params}
    assert {v.step for _, v in runtime.host.local("rt")} == {1}


def test_a_pnode_reports_done_only_for_its_own_backward_vnodes(make: Callable[..., tuple[PNodeRuntime,
                                                                                        RecordingLink]]) -> None:
    """With half the network elsewhere, hops for the other half leave through the transport, and this
    PNode never claims a micro-batch it has not finished."""
    runtime, link = make()
    order = EXEC.topo_order
    assignments = {nid: ("me" if i < len(order) // 2 else "other") for i, nid in enumerate(order)}
    runtime.place(placement(assignments=assignments))
    run = train_run()
    runtime.begin_run(run)
    runtime.submit(inputs(run)[0])
    runtime.call(lambda: None)
    wait_for(lambda: bool([r for r in link.reports if r.kind == "failed"]))
    failed = next(r for r in link.reports if r.kind == "failed")
    assert "mem:other" in failed.error  # the hop went to the other PNode's address (nobody serves it here)
    assert not [r for r in link.reports if r.kind == "done"]
    assert len(backward_set(EXEC)) > 0


def test_late_and_fenced_messages_are_dropped(make: Callable[..., tuple[PNodeRuntime, RecordingLink]]) -> None:
    runtime, link = make()
    runtime.place(placement())
    old = train_run("old", step=0)
    runtime.begin_run(old)
    runtime.apply_update("rt", 3, 1.0, True)  # the network moved on to step 3
    runtime.submit(inputs(old)[0])
    runtime.call(lambda: None)  # the queue has been worked through
    assert all(not v.holds(dcnr.runtime.vnode.RequestId("old", 0, 0, "train")) for _, v in runtime.host.local("rt"))
    with pytest.raises(Conflict, match="step 0"):
        runtime.begin_run(train_run("again", step=0))  # a run of a step this PNode has moved past
    fenced = train_run("fenced", step=3)
    runtime.begin_run(fenced)
    runtime.reset_to_step("rt", 3, fence_run="fenced")
    assert not runtime.submit(inputs(fenced)[0])  # an abandoned run's late hops are dropped at the door
    assert link.reports == []


def test_two_runs_of_the_same_step_never_share_a_request(make: Callable[..., tuple[PNodeRuntime,
                                                                                    RecordingLink]]) -> None:
    """The run id is part of every request key: one input from each of two runs of step 0 does not make
    a complete request, and the request that does complete computes with its own run's values."""
    runtime, link = make()
    runtime.place(placement())
    first, second = (Run("rt", rid, 0, "eval", 1, 1.0, (), network_digest(TEXT), 1) for rid in ("e1", "e2"))
    runtime.begin_run(first)
    runtime.begin_run(second)
    hidden = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(1))
    targets = inputs(first)[1].value
    assert runtime.submit(from_host("rt", "e1", 0, "fwd", "loss", 1, targets))
    assert runtime.submit(from_host("rt", "e2", 0, "fwd", "loss", 0, hidden))
    runtime.call(lambda: None)  # both hops delivered
    loss = runtime.host.vnode("rt", "loss")
    assert loss.holds(dcnr.runtime.vnode.RequestId("e1", 0, 0, "eval"))
    assert loss.holds(dcnr.runtime.vnode.RequestId("e2", 0, 0, "eval"))
    assert link.reports == []  # nothing fired on a mix of the two runs
    assert runtime.submit(from_host("rt", "e1", 0, "fwd", "loss", 0, hidden * 2))
    wait_for(lambda: any(r.kind == "output" for r in link.reports))
    (out,) = [r for r in link.reports if r.kind == "output"]
    want = dcnr.LocalExecutor(SPEC, seed=0).vnodes["loss"].run_forward(
        dcnr.runtime.vnode.RequestId("x", 0, 0, "eval"), [hidden * 2, targets], training=False)[0]
    assert out.run == "e1" and torch.equal(out.value, want)


def test_runs_on_another_placement_or_definition_are_refused(make: Callable[..., tuple[PNodeRuntime,
                                                                                      RecordingLink]]) -> None:
    runtime, _ = make()
    runtime.place(placement(version=7))
    with pytest.raises(Conflict, match="placement 6"):
        runtime.begin_run(train_run(version=6))
    with pytest.raises(Conflict):
        runtime.begin_run(Run("rt", "x", 0, "train", 1, 1.0, (), "0" * 64, 7))
    with pytest.raises(NotFound, match="unknown"):
        runtime.submit(inputs(train_run("never-begun"))[0])  # hops need a run described first
    with pytest.raises(InvalidArgument, match="digest"):
        runtime.place(Placement("rt", TEXT + "\n", 0, network_digest(TEXT), 8, 0, dict.fromkeys(SPEC.nodes, "me"),
                                {"me": "mem:me"}))


def test_hops_naming_vnodes_slots_or_edges_that_do_not_fit_are_refused(
        make: Callable[..., tuple[PNodeRuntime, RecordingLink]]) -> None:
    runtime, _ = make()
    order = EXEC.topo_order
    runtime.place(placement(assignments={nid: ("me" if nid != order[-1] else "other") for nid in order}))
    run = train_run()
    runtime.begin_run(run)
    x = torch.zeros(1, 6, dtype=torch.long)
    with pytest.raises(NotFound, match="no VNode"):
        runtime.submit(from_host("rt", run.id, 0, "fwd", "nope", 0, x))
    with pytest.raises(NotFound, match="not placed on PNode me"):
        runtime.submit(from_host("rt", run.id, 0, "fwd", order[-1], 0, x))
    with pytest.raises(InvalidArgument, match="input slot"):
        runtime.submit(from_host("rt", run.id, 0, "fwd", "embedder", 5, x))
    with pytest.raises(InvalidArgument, match="micro-batch"):
        runtime.submit(from_host("rt", run.id, 3, "fwd", "embedder", 0, x))
    with pytest.raises(InvalidArgument, match="does not leave"):
        runtime.submit(from_host("rt", run.id, 0, "bwd", "embedder", 10_000, None))


def test_a_new_placement_drops_vnodes_that_moved_away(make: Callable[..., tuple[PNodeRuntime,
                                                                               RecordingLink]]) -> None:
    runtime, _ = make()
    runtime.place(placement())
    run = train_run()
    runtime.begin_run(run)
    for hop in inputs(run):
        runtime.submit(hop)
    wait_for(lambda: len(runtime.host.local("rt")) == len(EXEC.nodes))
    moved = {nid: ("other" if nid.startswith("b0") else "me") for nid in EXEC.nodes}
    kept = sum(p == "me" for p in moved.values())
    assert runtime.place(placement(version=2, assignments=moved)) == kept
    assert {v.id for _, v in runtime.host.local("rt")} == {n for n, p in moved.items() if p == "me"}


def test_micro_batches_waiting_past_the_task_timeout_are_dropped_and_reported(
        make: Callable[..., tuple[PNodeRuntime, RecordingLink]]) -> None:
    runtime, link = make(task_timeout=0.3)
    runtime.place(placement())
    run = train_run()
    runtime.begin_run(run)
    runtime.submit(inputs(run)[1])  # the loss's targets; its prediction never comes
    wait_for(lambda: any(r.kind == "failed" for r in link.reports))
    failed = next(r for r in link.reports if r.kind == "failed")
    assert "timed out" in failed.error and "loss" in failed.error
    assert runtime.stats["refused"] == 1
    assert not runtime.host.vnode("rt", "loss").holds(dcnr.runtime.vnode.RequestId("r1", 0, 0, "train"))


def test_reinitializing_rebuilds_vnodes_from_the_seed(make: Callable[..., tuple[PNodeRuntime,
                                                                               RecordingLink]]) -> None:
    runtime, link = make()
    runtime.place(placement())
    initial, _ = runtime.save("rt", "embedder")
    run = train_run()
    runtime.begin_run(run)
    for hop in inputs(run):
        runtime.submit(hop)
    wait_for(lambda: any(r.kind == "done" for r in link.reports))
    runtime.apply_update("rt", 1, 1.0, True)
    trained, step = runtime.save("rt", "embedder")
    assert step == 1 and not torch.equal(trained["param/weight"], initial["param/weight"])
    runtime.reset_to_step("rt", 0, reinitialize=True)
    again, step = runtime.save("rt", "embedder")
    assert step == 0 and torch.equal(again["param/weight"], initial["param/weight"])


def test_a_refused_state_leaves_no_vnode_built_for_it(make: Callable[..., tuple[PNodeRuntime,
                                                                                RecordingLink]]) -> None:
    """Loading builds the VNode (and its tie unit) first; a fuzzed Load it then refused left them built."""
    runtime, _ = make()
    runtime.place(placement())
    with pytest.raises(ValueError, match="owns parameters"):
        runtime.load("rt", "embedder", {}, 0)
    assert runtime.list_vnodes("rt") == []
    state, step = runtime.save("rt", "embedder")
    runtime.load("rt", "embedder", state, step)
    assert "embedder" in [v.vnode for v in runtime.list_vnodes("rt")]


def test_a_cost_hashed_and_freed_never_lends_its_digest_to_the_next_tensor_at_its_address() -> None:
    """Digests are cached per tensor by its address; a reported cost is kept nowhere else, so once freed the
    next micro-batch's cost may take its address (the allocator reuses small blocks at once). The cache holds
    what it hashed, so a digest is always the digest of the value given (else an honest PNode's cost would
    differ from its commitment: a false charge)."""
    runtime = PNodeRuntime("me", MemoryHopTransport(MemoryFabric()), RecordingLink())
    ledger = _Ledger("run")
    for i in range(50):
        cost = torch.tensor(float(i)) * 1.5  # a fresh scalar each micro-batch, freed once hashed and reported
        assert runtime._digest(ledger, cost) == value_digest(cost), f"micro-batch {i}"
        del cost
