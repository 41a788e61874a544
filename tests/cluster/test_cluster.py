"""The orchestrator and PNodes together: membership, placement, sessions, data, forward and chat."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import grpc
import pytest
import torch
from cluster_helpers import Cluster, add_data, small_lm_yaml

import dcnr
from dcnr.proto.v2 import node_pb2, orchestrator_pb2
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.codec import version_message
from dcnr.transport.grpc.pnode import serve_pnode


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def forward(cluster: Cluster, tokens: torch.Tensor) -> torch.Tensor:
    reply = cluster.control.ForwardNetwork(orchestrator_pb2.ForwardRequest(
        network="small", inputs=[orchestrator_pb2.NamedValue(name="tokens", value=codec.encode_value(tokens))],
        outputs=["logits"]), timeout=30)
    return codec.decode_value(reply.outputs[0].value)


def test_silent_pnode_is_marked_dead_after_three_missed_heartbeats(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(0, heartbeat_interval=0.2)
    silent = cluster.stranger_id  # a PNode with a certificate that registers and never beats
    server, port = serve_pnode(cast(Any, None), cluster.stranger)  # answers the registration's probe as it
    cluster.nodes.RegisterPNode(node_pb2.RegisterPNodeRequest(
        id=silent, version=version_message(), address=f"127.0.0.1:{port}", hardware=node_pb2.Hardware(cpu_cores=1)),
        timeout=10)
    server.stop(0)
    started = time.monotonic()
    states = lambda: {p.id: p.state for p in cluster.control.ListPNodes(orchestrator_pb2.ListRequest()).pnodes}  # noqa: E731
    assert states() == {silent: "alive"}
    wait_for(lambda: states() == {silent: "dead"})
    assert time.monotonic() - started >= 3 * 0.2  # not before three beats were missed
    with pytest.raises(grpc.RpcError) as info:  # a dead PNode's heartbeat is refused: it must register again
        cluster.nodes.HeartbeatPNode(node_pb2.HeartbeatRequest(id=silent), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_heartbeating_pnodes_stay_alive_and_unregister_on_stop(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(2, heartbeat_interval=1.0)  # not sub-second: a loaded machine must not starve it
    time.sleep(4.0)  # four intervals: they would be dead without heartbeats
    rows = cluster.control.ListPNodes(orchestrator_pb2.ListRequest(), timeout=10).pnodes
    assert sorted((p.id, p.state) for p in rows) == sorted([(cluster.p("p0"), "alive"), (cluster.p("p1"), "alive")])
    assert {p.name for p in rows} == {"p0", "p1"}
    assert rows[0].hardware.cpu_cores >= 1 and rows[0].hardware.device == "cpu"
    cluster.pnodes[1].stop()
    rows = cluster.control.ListPNodes(orchestrator_pb2.ListRequest(), timeout=10).pnodes
    assert [p.id for p in rows] == [cluster.p("p0")]


def test_forward_matches_the_local_executor_and_follows_a_moved_vnode(cluster_factory: Callable[..., Cluster]) -> None:
    """PNodes cache where VNodes live; when a PNode leaves, hops to it fail, are re-resolved and succeed."""
    cluster = cluster_factory(2)
    text = small_lm_yaml(dropout=0.0)
    cluster.control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=text), timeout=30)
    tokens = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(1))
    want = dcnr.LocalExecutor(dcnr.parse_network(text)).forward({"tokens": tokens})["logits"]
    assert torch.equal(forward(cluster, tokens), want)
    before = cluster.orch.store.placements("small")
    p0, p1 = cluster.p("p0"), cluster.p("p1")
    assert set(before.values()) == {p0, p1}
    cluster.pnodes[1].stop()
    cluster.pnodes.append(cluster.add_pnode("p2"))
    assert torch.equal(forward(cluster, tokens), want)  # untrained: re-created VNodes hold the same parameters
    after = cluster.orch.store.placements("small")
    assert set(after.values()) == {p0, cluster.p("p2")}
    assert all(after[v] == p0 for v, p in before.items() if p == p0), "VNodes on a live PNode stay put"


def test_session_suspend_and_resume_give_the_uninterrupted_result(cluster_factory: Callable[..., Cluster]) -> None:
    a, b = cluster_factory(2), cluster_factory(2)
    losses = []
    for cluster, pause in ((a, False), (b, True)):
        c = cluster.control
        c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=small_lm_yaml()), timeout=30)
        add_data(cluster.client)
        s = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
            network="small", dataset="d", steps=12, batch_size=4, micro_batches=2, seed=3), timeout=30)
        assert s.state == "created"
        ref = orchestrator_pb2.SessionRef(id=s.id)
        c.StartTrainSession(ref, timeout=30)
        events = []
        if pause:
            for ev in c.ListenTrainSession(ref, timeout=60):
                events.append(ev)
                if ev.step == 4:
                    break
            info = c.SuspendTrainSession(ref, timeout=60)
            assert info.state == "suspended" and 4 <= info.step < 12
            assert c.ListTrainSessions(orchestrator_pb2.ListRequest()).sessions[0].state == "suspended"
            time.sleep(0.3)
            assert c.ListTrainSessions(orchestrator_pb2.ListRequest()).sessions[0].step == info.step  # really stopped
            c.StartTrainSession(ref, timeout=30)  # resume
            events = []
        events += [ev for ev in c.ListenTrainSession(ref, timeout=60)]
        assert events[-1].state == "completed" and events[-1].step == 12
        with pytest.raises(grpc.RpcError) as info_err:
            c.StartTrainSession(ref, timeout=30)
        assert info_err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        losses.append([e.loss for e in events if e.state in ("running", "completed") and e.step > 4])
    assert losses[0] == losses[1]


def test_validate_and_chat(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(2)
    c = cluster.control
    c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=small_lm_yaml(dropout=0.0)), timeout=30)
    add_data(cluster.client)
    val = c.ValidateNetwork(orchestrator_pb2.ValidateRequest(network="small", dataset="d", batches=2, batch_size=4,
                                                             seed=0), timeout=60)
    ds = cluster.orch.data.dataset("d")
    ex = dcnr.LocalExecutor(dcnr.parse_network(small_lm_yaml(dropout=0.0)))
    want = 0.0
    for i in range(2):
        x, y = ds.batch(0, i, 4, 8, split="validation")
        logits = ex.forward({"tokens": x}, outputs=["logits"])["logits"]
        want += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item() / 2
    assert val.costs["ce_loss"] == pytest.approx(want, rel=1e-5)
    chunks = list(c.ChatNetwork(orchestrator_pb2.ChatRequest(network="small", vocabulary="v", prompt="the quick",
                                                             max_new_tokens=6, temperature=0.0), timeout=60))
    assert chunks[-1].done and len([ch for ch in chunks if not ch.done]) == 6
    tok = cluster.orch.data.tokenizer("v")
    ids = ex.generate(tok.encode("the quick", add_special_tokens=False).ids, max_new_tokens=6, temperature=0.0)
    assert [ch.token for ch in chunks if not ch.done] == ids[-6:].tolist()


def test_placement_refuses_a_network_no_pnode_can_hold(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(1, budget=1 << 16)
    cluster.control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=small_lm_yaml()), timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        forward(cluster, torch.zeros(1, 8, dtype=torch.long))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MiB" in (info.value.details() or "")


def test_pnode_refuses_vnodes_beyond_its_budget_and_reports_it(cluster_factory: Callable[..., Cluster]) -> None:
    """A PNode that declared more than it enforces (or placement raced): work is refused, the request fails
    fast with the reason, and the refusal is counted in heartbeats."""
    cluster = cluster_factory(1)
    cluster.pnodes[0].runtime.host.memory_budget = 1 << 16
    cluster.control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=small_lm_yaml()), timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        forward(cluster, torch.zeros(1, 8, dtype=torch.long))
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert "memory budget exceeded" in (info.value.details() or "")
    assert cluster.pnodes[0].runtime.stats["refused"] >= 1


def test_a_pnode_dying_mid_run_fails_the_step_fast_not_at_the_timeout(cluster_factory: Callable[..., Cluster]) -> None:
    """A PNode that crashes (no unregister, no heartbeats, no server) makes the step fail within seconds."""
    cluster = cluster_factory(2, heartbeat_interval=1.0, step_timeout=60.0)
    cluster.control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=small_lm_yaml()), timeout=30)
    tokens = torch.zeros(2, 8, dtype=torch.long)
    forward(cluster, tokens)  # placed on both PNodes, locations cached
    victim = cluster.pnodes.pop(1)
    victim._stop.set()  # heartbeats stop
    assert victim.server is not None
    victim.server.stop(None)  # and it no longer answers
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        cluster.control.TrainNetwork(orchestrator_pb2.TrainRequest(network="small", inputs=[
            orchestrator_pb2.NamedValue(name="tokens", value=codec.encode_value(tokens)),
            orchestrator_pb2.NamedValue(name="targets", value=codec.encode_value(tokens))]), timeout=60)
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert time.monotonic() - started < 15
    victim.runtime.stop()
    victim.link.close()


def test_export_import_and_clone_carry_the_trained_state(cluster_factory: Callable[..., Cluster]) -> None:
    """A trained network exported and imported (or cloned) continues exactly like the original."""
    cluster = cluster_factory(2)
    c = cluster.control
    text = small_lm_yaml()
    c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=text), timeout=30)
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randint(0, 300, (2, 8), generator=g), torch.randint(0, 300, (2, 8), generator=g))
               for _ in range(4)]

    def step(network: str, x: torch.Tensor, y: torch.Tensor) -> float:
        return c.TrainNetwork(orchestrator_pb2.TrainRequest(network=network, inputs=[
            orchestrator_pb2.NamedValue(name="tokens", value=codec.encode_value(x)),
            orchestrator_pb2.NamedValue(name="targets", value=codec.encode_value(y))]), timeout=60).costs["ce_loss"]

    for x, y in batches[:2]:
        step("small", x, y)
    blob = b"".join(ch.data for ch in c.ExportNetwork(orchestrator_pb2.ExportNetworkRequest(name="small"),
                                                      timeout=60))
    chunks = [orchestrator_pb2.BlobChunk(data=blob[i:i + 4096], name="" if i else "copy")
              for i in range(0, len(blob), 4096)]
    info = c.ImportNetwork(iter(chunks), timeout=60)
    assert (info.name, info.step) == ("copy", 2)
    clone = c.CloneNetwork(orchestrator_pb2.CloneNetworkRequest(source="small", name="twin"), timeout=60)
    assert clone.step == 2
    steps = {v.step for p in cluster.pnodes for net, v in p.runtime.host.local() if net in ("copy", "twin")}
    assert steps == {2}  # every VNode built so far, with parameters of its own or tied ones, is at step 2
    ex = dcnr.LocalExecutor(dcnr.parse_network(text))
    for x, y in batches[:2]:
        ex.train_step({"tokens": x, "targets": y})
    for x, y in batches[2:]:  # Adam moments and step came along: the continuations agree bit for bit
        want = ex.train_step({"tokens": x, "targets": y})["ce_loss"]
        assert step("small", x, y) == step("copy", x, y) == step("twin", x, y) == want

    with pytest.raises(grpc.RpcError) as info_err:
        c.ImportNetwork(iter([orchestrator_pb2.BlobChunk(data=b"not a checkpoint", name="junk")]), timeout=30)
    assert info_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [n.name for n in c.ListNetworks(orchestrator_pb2.ListRequest()).networks] == ["copy", "small", "twin"]


TEXT_NETWORK = """
name: text
nodes:
  - {id: tok, type: tokenizer, config: {vocab_size: 300, pad_length: 12, vocabulary: v}}
  - {id: detok, type: detokenizer, config: {vocab_size: 300, vocabulary: v}}
edges:
  - {from: tok, to: detok}
inputs: [{name: text, node_id: tok}]
outputs: [{name: ids, node_id: tok}, {name: echo, node_id: detok}]
"""


def test_tokenizer_nodes_use_a_vocabulary_stored_by_the_orchestrator(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(1)
    c = cluster.control
    with pytest.raises(grpc.RpcError) as info:  # the vocabulary must exist when the network is submitted
        c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=TEXT_NETWORK, source="text.yml"), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "text.yml: node 'tok': config.vocabulary: unknown vocabulary 'v'" in (info.value.details() or "")
    add_data(cluster.client)
    c.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=TEXT_NETWORK), timeout=30)
    texts = ["the quick brown fox", "lazy dog"]
    reply = c.ForwardNetwork(orchestrator_pb2.ForwardRequest(network="text", inputs=[
        orchestrator_pb2.NamedValue(name="text", value=codec.encode_value(texts))]), timeout=30)
    got = {o.name: codec.decode_value(o.value) for o in reply.outputs}
    tok = cluster.orch.data.tokenizer("v")
    want = tok.encode("lazy dog", add_special_tokens=False).ids
    assert got["ids"][1].tolist() == want + [0] * (12 - len(want))  # padded with <pad> = 0
    assert got["echo"] == texts
