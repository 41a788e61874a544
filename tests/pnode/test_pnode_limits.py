"""What a PNode accepts from strangers: every hop's value checked against the network before it is
queued, placements and runs within bounds, no file a network names ever read, and bounded queues and
per-request state that refuse with ResourceExhausted, which senders retry a bounded number of times."""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_runtime import EXEC, TEXT, RecordingLink, from_host, inputs, placement, train_run, wait_for

import dcnr
import dcnr.pnode.runtime as pnode_runtime
from dcnr.errors import InvalidArgument, ResourceExhausted
from dcnr.pnode.limits import MAX_MICRO_BATCHES, Expectations, Limits
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.runtime.vnode import RequestId
from dcnr.spec.passes import plan
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.memory import MemoryFabric, MemoryHopTransport
from dcnr.transport.messages import Hop, Placement, Run, network_digest

ALL = dict.fromkeys(EXEC.nodes, "me")
ROOMY = Limits.for_budget(None)
HIDDEN = torch.zeros(2, 6, 8)  # what flows between the transformer's blocks: (batch, seq, dim)

STRUCTURE = """\
name: shapes
nodes:
  - {id: ids, type: broadcast, config: {num_outputs: 2}}
  - {id: emb, type: embedder, config: {vocab_size: 20, dim: 8, seq_len: 4}}
  - {id: fan, type: broadcast, config: {num_outputs: 2}}
  - {id: scores, type: linear, config: {in_dim: 8, out_dim: 4}}
  - {id: causal, type: mask}
  - {id: flat, type: reshape, config: {target_shape: [16]}}
  - {id: back, type: reshape, config: {target_shape: [4, 4]}}
  - {id: side, type: linear, config: {in_dim: 8, out_dim: 4}}
  - {id: both, type: stack, config: {axis: -1}}
  - {id: head, type: linear, config: {in_dim: 8, out_dim: 20}}
  - {id: loss, type: cost, config: {cost_function: ce_logits, vocab_size: 20}}
edges:
  - {from: ids, from_slot: 0, to: emb}
  - {from: emb, to: fan}
  - {from: fan, from_slot: 0, to: scores}
  - {from: scores, to: causal}
  - {from: causal, to: flat}
  - {from: flat, to: back}
  - {from: fan, from_slot: 1, to: side}
  - {from: back, to: both, to_slot: 0}
  - {from: side, to: both, to_slot: 1}
  - {from: both, to: head}
  - {from: head, to: loss, to_slot: 0}
  - {from: ids, from_slot: 1, to: loss, to_slot: 1}
inputs: [{name: tokens, node_id: ids}]
outputs: [{name: logits, node_id: head}]
costs: [{name: ce, node_id: loss}]
"""


@pytest.fixture()
def make() -> Iterator[Callable[..., tuple[PNodeRuntime, RecordingLink]]]:
    made: list[PNodeRuntime] = []

    def build(pnode: str = "me", fabric: MemoryFabric | None = None, **options: Any) -> tuple[PNodeRuntime,
                                                                                              RecordingLink]:
        link = RecordingLink()
        fabric = fabric or MemoryFabric()
        runtime = PNodeRuntime(pnode, MemoryHopTransport(fabric), link, **options)
        runtime.start()
        fabric.attach(f"mem:{pnode}", runtime)
        made.append(runtime)
        return runtime, link

    yield build
    for r in made:
        r.stop()


class Gate:
    """Holds a runtime's compute thread until released (hops pile up in its queue meanwhile)."""

    def __init__(self, runtime: PNodeRuntime) -> None:
        self.open, entered = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            self.open.wait(timeout=60)

        self.thread = threading.Thread(target=runtime.call, args=(hold,), daemon=True)
        self.thread.start()
        assert entered.wait(timeout=30), "the compute thread never got to the gate"

    def release(self) -> None:
        self.open.set()
        self.thread.join(timeout=10)


# -- 1. values checked against the network ----------------------------------------------------------

def routed(ex: dcnr.LocalExecutor, run: Run, batch: dict[str, Any]) -> int:
    """Route one micro-batch as the executor does, checking every hop as a receiving PNode would."""
    expect = Expectations(ex.spec)
    todo = deque(ex.router.inputs(run, 0, batch))
    checked = 0
    while todo:
        hop = todo.popleft()
        expect.check(hop.op, hop.vnode, hop.index, hop.value, ROOMY.max_hop_elements)
        checked += 1
        todo.extend(m for m in ex.router.deliver(ex.vnodes[hop.vnode], run, hop) if isinstance(m, Hop))
    return checked


@pytest.mark.parametrize("precision", ["float32", "fp16"])
def test_every_hop_of_real_training_and_shorter_generation_passes(precision: str) -> None:
    """No false refusal: each forward and gradient hop of a training step fits, fp16 included, and so do
    the shorter sequences generation sends (a sequence axis is bounded by the spec, not fixed)."""
    text = yaml.safe_dump(transformer_lm("lm", blocks=1, heads=2, head_dim=4, dim=8, seq_len=6, vocab_size=30,
                                         dropout=0.1, precision=precision))
    ex = dcnr.LocalExecutor(dcnr.parse_network(text))
    ids = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    train = Run("lm", "t", 0, "train", grad_scale=1.0)
    assert routed(ex, train, {"tokens": ids, "targets": ids}) > 2 * len(ex.spec.edges) - 4  # backward too
    for seq in (1, 3):
        infer = Run("lm", f"i{seq}", seq, "infer", outputs=("logits",))
        assert routed(ex, infer, {"tokens": ids[:1, :seq]}) > 0


def test_ids_copied_by_a_broadcast_and_structural_nodes_pass() -> None:
    ex = dcnr.LocalExecutor(dcnr.parse_network(STRUCTURE))
    run = Run("shapes", "t", 0, "train", grad_scale=1.0)
    assert routed(ex, run, {"tokens": torch.randint(0, 20, (3, 4))}) > len(ex.spec.edges)


BAD: list[tuple[str, str, int, Any, str]] = [
    ("huge empty", "b0_ln1", 0, torch.zeros(0, 60000, 60000), "got float32 of shape [0, 60000, 60000]"),
    ("longer than seq_len", "b0_ln1", 0, torch.zeros(2, 7, 8), "expected floats of shape [batch, ≤6, 8]"),
    ("feature size", "b0_ln1", 0, torch.zeros(2, 6, 9), "got float32 of shape [2, 6, 9]"),
    ("rank", "b0_ln1", 0, torch.zeros(2, 1, 6, 8), "got float32 of shape [2, 1, 6, 8]"),
    ("no batch axis", "b0_ln1", 0, torch.zeros(6, 8), "got float32 of shape [6, 8]"),
    ("ids where floats flow", "b0_ln1", 0, torch.zeros(2, 6, 8, dtype=torch.long), "got int64"),
    ("float64 between VNodes", "b0_add1", 1, torch.zeros(2, 6, 8, dtype=torch.float64), "got float64"),
    ("bool ids", "embedder", 0, torch.zeros(2, 6, dtype=torch.bool), "expected ids or floats of shape [batch, ≤6]"),
    ("text for a tensor", "embedder", 0, ["some", "text"], "got list"),
    ("too many elements", "loss", 1, torch.zeros(1, 2**20 + 1, dtype=torch.uint8), "more than 1048576 elements"),
    ("too large when empty", "loss", 1, torch.zeros(0, 2**11, 2**10), "empty axes counted as one"),
]


@pytest.mark.parametrize("vnode, slot, value, text", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_value_that_does_not_fit_its_slot_is_refused_and_changes_nothing(
        make: Callable[..., tuple[PNodeRuntime, RecordingLink]], vnode: str, slot: int, value: Any, text: str) -> None:
    runtime, link = make(limits=Limits(max_hop_elements=2**20, max_queued_bytes=2**30))
    runtime.place(placement())
    run = train_run()
    runtime.begin_run(run)
    with pytest.raises(InvalidArgument) as info:
        runtime.submit(from_host("rt", run.id, 0, "fwd", vnode, slot, value))
    message = str(info.value)
    assert message.startswith(f"network 'rt', VNode {vnode!r}, input slot {slot}: expected ") and text in message
    runtime.call(lambda: None)
    assert runtime.host.local("rt") == [] and link.reports == []  # nothing was built, queued or run
    good = HIDDEN if vnode not in ("embedder", "loss") else inputs(run)[0 if vnode == "embedder" else 1].value
    assert runtime.submit(from_host("rt", run.id, 0, "fwd", vnode, slot, good))  # not taken for a duplicate


def test_a_gradient_must_have_its_edge_value_shape_and_a_float_dtype(
        make: Callable[..., tuple[PNodeRuntime, RecordingLink]]) -> None:
    runtime, _ = make()
    runtime.place(placement())
    run = train_run(micro_batches=2)
    runtime.begin_run(run)
    edge = next(i for i, e in enumerate(EXEC.edges) if e.src == "b0_ln1")
    for bad, got in ((torch.zeros(2, 6, 7), "got float32 of shape [2, 6, 7]"),
                     (torch.zeros(2, 6, 8, dtype=torch.int32), "got int32")):
        want = rf"VNode 'b0_ln1', the gradient of edge {edge} \(b0_ln1\[0\] -> .*\): expected floats of shape "
        with pytest.raises(InvalidArgument, match=want + rf"\[batch, ≤6, 8\], {re.escape(got)}"):
            runtime.submit(from_host("rt", run.id, 0, "bwd", "b0_ln1", edge, bad))
    assert runtime.submit(from_host("rt", run.id, 0, "bwd", "b0_ln1", edge, torch.zeros(2, 6, 8, dtype=torch.float16)))
    assert runtime.submit(from_host("rt", run.id, 1, "bwd", "b0_ln1", edge, None))  # a zero gradient


# -- 4. no file a network names is read -------------------------------------------------------------

TEXT_NET = """\
name: text
nodes:
  - {id: tok, type: tokenizer, config: {vocab_size: 300, pad_length: 8, %s}}
  - {id: detok, type: detokenizer, config: {vocab_size: 300, vocabulary: v}}
edges: [{from: tok, to: detok}]
inputs: [{name: text, node_id: tok}]
outputs: [{name: echo, node_id: detok}]
"""


def text_placement(source: str, version: int = 1) -> Placement:
    text = TEXT_NET % source
    return Placement("text", text, 0, network_digest(text), version, 0, {"tok": "me", "detok": "me"},
                     {"me": "mem:me"}, {"v": "{}"})


@pytest.mark.parametrize("path", ["/etc/passwd", "../../secrets/tokenizer.json"])
def test_a_placement_naming_a_vocabulary_file_is_refused_without_reading_it(
        make: Callable[..., tuple[PNodeRuntime, RecordingLink]], monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    opened: list[str] = []

    def spy(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Path, *args: Any, **kwargs: Any) -> Any:
            opened.append(str(self))
            return real(self, *args, **kwargs)
        return call

    for name in ("is_file", "exists", "open", "read_text", "read_bytes"):
        monkeypatch.setattr(Path, name, spy(getattr(Path, name)))
    monkeypatch.setattr("dcnr.data.vocabularies.Tokenizer.from_file", lambda name: opened.append(name))
    runtime, _ = make()
    assert runtime.place(text_placement("vocabulary: v")) == 2  # a stored vocabulary is how text nodes run here
    with pytest.raises(InvalidArgument, match=r"network 'text': VNode 'tok' names a vocabulary file \(vocab_path\)"):
        runtime.place(text_placement(f"vocab_path: {path}", version=2))
    assert runtime._net("text").placement.version == 1  # the refused placement changed nothing
    assert opened == []


# -- 5. placements and runs within bounds -------------------------------------------------------------

def test_placements_and_runs_beyond_their_bounds_are_refused_before_anything_is_built(
        make: Callable[..., tuple[PNodeRuntime, RecordingLink]]) -> None:
    runtime, _ = make()
    huge = TEXT + "#" * (16 * 2**20) + "\n"
    with pytest.raises(InvalidArgument, match=r"characters of YAML, at most 16777216"):
        runtime.place(Placement("rt", huge, 0, network_digest(huge), 1, 0, ALL, {"me": "mem:me"}))
    many = {**ALL, **{f"x{i}": "me" for i in range(65536)}}
    with pytest.raises(InvalidArgument, match=r"65556 VNodes, at most 65536"):
        runtime.place(Placement("rt", TEXT, 0, network_digest(TEXT), 1, 0, many, {"me": "mem:me"}))
    assert runtime.host.networks() == []
    runtime.place(placement())
    for count in (0, MAX_MICRO_BATCHES + 1, 2**32 - 1):
        with pytest.raises(InvalidArgument, match=rf"1 to {MAX_MICRO_BATCHES} micro-batches, got {count}"):
            runtime.begin_run(Run("rt", "big", 0, "train", count, 1.0, (), network_digest(TEXT), 1))
    with pytest.raises(InvalidArgument, match="no output 'nope'"):
        runtime.begin_run(Run("rt", "out", 0, "infer", 1, 1.0, ("nope",), network_digest(TEXT), 1))
    assert not runtime._net("rt").runs
    runtime.begin_run(train_run("fine", micro_batches=MAX_MICRO_BATCHES))


# -- 2. bounded queues and per-request state ----------------------------------------------------------

def test_a_full_work_queue_refuses_hops_with_resource_exhausted_until_it_drains(
        make: Callable[..., tuple[PNodeRuntime, RecordingLink]]) -> None:
    runtime, link = make(limits=Limits(max_hop_elements=2**20, max_queued_bytes=2**20, max_queued_hops=2))
    runtime.place(placement())
    run = train_run(micro_batches=3)
    runtime.begin_run(run)
    gate = Gate(runtime)
    assert runtime.submit(inputs(run, 0)[0]) and runtime.submit(inputs(run, 0)[1])
    with pytest.raises(ResourceExhausted, match=r"PNode me is busy: 2 hops .* wait for its compute thread, at most 2"):
        runtime.submit(inputs(run, 1)[0])
    gate.release()
    wait_for(lambda: any(r.kind == "done" for r in link.reports))
    assert runtime.submit(inputs(run, 1)[0])  # refused before: not taken for a duplicate now
    assert runtime.stats["refused"] == 1


def test_queued_bytes_are_bounded_too(make: Callable[..., tuple[PNodeRuntime, RecordingLink]]) -> None:
    runtime, _ = make(limits=Limits(max_hop_elements=2**20, max_queued_bytes=HIDDEN.numel() * 4 + 2 * 6 * 8))
    runtime.place(placement())
    run = train_run(micro_batches=2)
    runtime.begin_run(run)
    gate = Gate(runtime)
    try:
        assert runtime.submit(from_host("rt", run.id, 0, "fwd", "b0_ln1", 0, HIDDEN))
        assert runtime.submit(inputs(run, 0)[0])  # 96 bytes of ids: just room for them
        with pytest.raises(ResourceExhausted, match=r"MiB\) wait for its compute thread"):
            runtime.submit(from_host("rt", run.id, 1, "fwd", "b0_ln1", 0, HIDDEN))
    finally:
        gate.release()


def test_a_vnode_holds_a_bounded_number_of_unfinished_requests(
        make: Callable[..., tuple[PNodeRuntime, RecordingLink]]) -> None:
    """Inputs that would open a new request at a VNode already holding its share are refused; inputs that
    complete a request it holds are not."""
    runtime, link = make(limits=Limits(max_hop_elements=2**20, max_queued_bytes=2**30, pending_per_vnode=2))
    runtime.place(placement())
    run = Run("rt", "ev", 0, "eval", 3, 1.0, (), network_digest(TEXT), 1)
    runtime.begin_run(run)
    for mb in (0, 1):
        assert runtime.submit(from_host("rt", "ev", mb, "fwd", "loss", 1, inputs(run, mb)[1].value))
    runtime.call(lambda: None)
    assert runtime.host.vnode("rt", "loss").pending() == 2
    with pytest.raises(ResourceExhausted, match=r"VNode 'loss' holds 2 unfinished requests, at most 2"):
        runtime.submit(from_host("rt", "ev", 2, "fwd", "loss", 1, inputs(run, 2)[1].value))
    assert runtime.submit(from_host("rt", "ev", 0, "fwd", "loss", 0, HIDDEN))  # completes micro-batch 0
    wait_for(lambda: any(r.kind == "output" for r in link.reports))
    assert runtime.submit(from_host("rt", "ev", 2, "fwd", "loss", 1, inputs(run, 2)[1].value))  # room again
    runtime.call(lambda: None)
    assert runtime.host.vnode("rt", "loss").holds(RequestId("ev", 0, 2, "eval"))


def split_placement() -> dict[str, str]:
    """The embedder here, everything else on the other PNode."""
    return {nid: "me" if nid == "embedder" else "other" for nid in EXEC.nodes}


def test_a_busy_peer_is_retried_and_the_step_completes(make: Callable[..., tuple[PNodeRuntime, RecordingLink]]
                                                       ) -> None:
    fabric = MemoryFabric()
    me, my_reports = make("me", fabric)
    other, other_reports = make("other", fabric, limits=Limits(max_hop_elements=2**20, max_queued_bytes=2**30,
                                                               max_queued_hops=1))
    for runtime in (me, other):
        runtime.place(placement(assignments=split_placement()))
        runtime.begin_run(train_run())
    tokens, targets = inputs(train_run())
    gate = Gate(other)
    assert other.submit(targets)  # fills its queue while its compute thread is held
    assert me.submit(tokens)  # the embedder's output then finds the other PNode busy
    wait_for(lambda: other.stats["refused"] >= 1)
    gate.release()
    wait_for(lambda: all(any(r.kind == "done" for r in link.reports) for link in (my_reports, other_reports)))
    assert not [r for r in my_reports.reports + other_reports.reports if r.kind == "failed"]
    want = dcnr.LocalExecutor(dcnr.parse_network(TEXT), seed=0).train_step({"tokens": tokens.value,
                                                                            "targets": targets.value})
    (loss,) = [r.value for r in other_reports.reports if r.kind == "output"]
    assert float(loss) == want["ce_loss"]


def test_a_peer_busy_for_too_long_fails_the_run_after_bounded_attempts(
        make: Callable[..., tuple[PNodeRuntime, RecordingLink]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pnode_runtime, "BUSY_ATTEMPTS", 3)
    fabric = MemoryFabric()
    me, my_reports = make("me", fabric)
    other, _ = make("other", fabric, limits=Limits(max_hop_elements=2**20, max_queued_bytes=2**30,
                                                   max_queued_hops=1))
    for runtime in (me, other):
        runtime.place(placement(assignments=split_placement()))
        runtime.begin_run(train_run())
    tokens, targets = inputs(train_run())
    gate = Gate(other)
    try:
        other.submit(targets)
        me.submit(tokens)
        wait_for(lambda: any(r.kind == "failed" for r in my_reports.reports))
    finally:
        gate.release()
    (failed,) = [r for r in my_reports.reports if r.kind == "failed"]
    assert "ResourceExhausted" in failed.error and "PNode other is busy" in failed.error
    assert other.stats["refused"] == 3  # the first try and two retries


class StuckHops:
    """A hop transport whose sends hang until released."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def send(self, address: str, hop: Hop, on_error: Callable[[Exception], None]) -> None:
        self.go.wait(timeout=30)

    def send_now(self, address: str, hop: Hop, timeout: float) -> None:
        self.send(address, hop, lambda exc: None)

    def close(self) -> None:
        self.go.set()


def test_the_outbox_is_bounded_and_a_send_waiting_past_the_task_timeout_fails_its_run() -> None:
    hops, link = StuckHops(), RecordingLink()
    runtime = PNodeRuntime("me", hops, link, task_timeout=0.5,
                           limits=Limits(max_hop_elements=2**20, max_queued_bytes=2**30, outbox_hops=1))
    runtime.start()
    try:
        runtime.place(placement(assignments=split_placement()))
        run = train_run(micro_batches=4)
        runtime.begin_run(run)
        for mb in range(4):
            runtime.submit(inputs(run, mb)[0])
        wait_for(lambda: any(r.kind == "failed" for r in link.reports))
        assert runtime._outbox.qsize() <= 1
        failed = [r for r in link.reports if r.kind == "failed"]
        assert "nothing could be sent for 0.5 s" in failed[0].error
    finally:
        hops.go.set()
        runtime.stop()


def test_limits_are_sized_from_the_memory_budget() -> None:
    assert Limits.for_budget(8 * 2**30) == Limits(max_hop_elements=2**29, max_queued_bytes=2 * 2**30)
    small = Limits.for_budget(1 << 16)  # a tiny budget still takes ordinary activations
    assert small.max_hop_elements == 2**20 and small.max_queued_bytes == 64 * 2**20
    assert Limits.for_budget(None) == Limits.for_budget(4 * 2**30)


def test_expectations_cover_every_slot_and_edge_of_the_executed_network() -> None:
    executed = plan(dcnr.parse_network(TEXT)).spec
    expect = Expectations(executed)
    assert set(expect.inputs) == {(nid, s) for nid, n in executed.nodes.items() for s in range(n.impl.num_inputs)}
    assert set(expect.gradients) == set(range(len(executed.edges)))
