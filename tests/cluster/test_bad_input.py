"""Bad input to the orchestrator and to PNodes, over real gRPC on loopback.

Every bad request is answered with the right status and a message that says what was
wrong, and the server goes on serving: a following `Health` and a real call succeed.
A failed training step must not poison the next one. A request over one of the orchestrator's
limits is refused before the orchestrator spends the memory (an upload while it streams).
"""

from __future__ import annotations

import functools
import importlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from cluster_helpers import TEXTS, Cluster, add_data, small_lm_yaml
from tls_helpers import orchestrator_identity, pnode_identity, to_orchestrator, to_pnode
from tokenizers import Tokenizer

import dcnr
from dcnr.data.vocab import train_vocabulary
from dcnr.orchestrator.app import Orchestrator
from dcnr.orchestrator.limits import Limits
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.proto.v2 import common_pb2, node_pb2, node_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from dcnr.proto.version import PROTOCOL_VERSION
from dcnr.security.config import ClientConfig
from dcnr.security.pki import CertificateAuthority
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.codec import version_message
from dcnr.transport.grpc.pnode import GrpcHopTransport, GrpcPNodeClient, pnode_channels, serve_pnode
from dcnr.transport.grpc.security import Identity
from dcnr.transport.messages import Placement, network_digest

TIMEOUT = 20  # seconds, on every call
LIMIT = 64 * 1024  # the message size limit of the servers built here
VOCAB, SEQ = 300, 8  # small_lm_yaml(): tokens and targets are int64 (batch, 8), ids < 300
STEP_TIMEOUT = 8.0  # a step that hangs fails after this long: far above a step's real duration
MINE = ".".join(map(str, PROTOCOL_VERSION))
ALIEN = common_pb2.ProtocolVersion(major=99, minor=3, patch=1)

Thunk = Callable[[Cluster], Any]

# torch imports its compiler stack the first time an optimizer is built (seconds, once per process).
# Do it at collection, so no test's step — whose promptness some tests measure — pays for it.
importlib.import_module("torch._dynamo")


# -- helpers ------------------------------------------------------------------------------------

def refused(thunk: Callable[[], Any], code: grpc.StatusCode, *texts: str) -> str:
    """Run a call that must fail with `code` and a message holding every one of `texts`; returns the message."""
    with pytest.raises(grpc.RpcError) as info:
        thunk()
    err = info.value
    details = err.details() or ""
    assert err.code() == code, f"expected {code.name}, got {err.code().name}: {details}"
    for text in texts:
        assert text in details, f"{text!r} not in {details!r}"
    return details


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def named(**values: Any) -> list[orchestrator_pb2.NamedValue]:
    out = []
    for name, v in values.items():
        value = v if isinstance(v, common_pb2.Value) else codec.encode_value(v)
        out.append(orchestrator_pb2.NamedValue(name=name, value=value))
    return out


def hop(vnode: str = "embedder", value: Any = None, *, network: str = "small", slot: int = 0) -> node_pb2.HopRequest:
    if value is None:
        value = torch.zeros(1, SEQ, dtype=torch.long)
    msg = value if isinstance(value, common_pb2.Value) else codec.encode_value(value)
    return node_pb2.HopRequest(network=network, run="test", vnode=vnode, slot=slot, value=msg)


def bad_bytes() -> common_pb2.Value:
    """int64 × [1, 8] needs 64 bytes; this has 63."""
    return common_pb2.Value(tensor=common_pb2.Tensor(dtype="int64", shape=[1, SEQ], data=b"\0" * 63))


def bad_dtype() -> common_pb2.Value:
    return common_pb2.Value(tensor=common_pb2.Tensor(dtype="complex32", shape=[1, SEQ], data=b"\0" * 32))


def vnode_stub(channels: list[grpc.Channel], address: str, identity: Identity) -> node_pb2_grpc.VNodeServiceStub:
    channel = to_pnode(address, identity)
    channels.append(channel)
    return node_pb2_grpc.VNodeServiceStub(channel)


def assert_pnode_serves(stub: node_pb2_grpc.VNodeServiceStub) -> None:
    """Health answers with our protocol version (runs across the fleet are checked by `assert_serving`)."""
    health = stub.Health(common_pb2.HealthRequest(), timeout=TIMEOUT)
    assert health.status == "serving" and health.version.major == PROTOCOL_VERSION[0]


def assert_serving(cluster: Cluster, channels: list[grpc.Channel]) -> None:
    """The orchestrator and every PNode answer Health, and a real forward runs across the fleet."""
    health = cluster.control.Health(common_pb2.HealthRequest(), timeout=TIMEOUT)
    assert health.status == "serving" and health.version.major == PROTOCOL_VERSION[0]
    for p in cluster.pnodes:
        assert_pnode_serves(vnode_stub(channels, p.address, cluster.orch.identity))
    reply = cluster.control.ForwardNetwork(orchestrator_pb2.ForwardRequest(
        network="small", inputs=named(tokens=ids(1, SEQ))), timeout=TIMEOUT)
    logits = codec.decode_value(reply.outputs[0].value)
    assert reply.outputs[0].name == "logits" and tuple(logits.shape) == (1, SEQ, VOCAB)
    assert bool(torch.isfinite(logits).all())


def train(cluster: Cluster, tokens: Any, targets: Any, micro_batches: int = 1) -> orchestrator_pb2.TrainResponse:
    return cluster.control.TrainNetwork(orchestrator_pb2.TrainRequest(
        network="small", inputs=named(tokens=tokens, targets=targets), micro_batches=micro_batches),
        timeout=TIMEOUT)


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture()
def channels() -> Iterator[list[grpc.Channel]]:
    made: list[grpc.Channel] = []
    yield made
    for ch in made:
        ch.close()


@pytest.fixture()
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """Two PNodes and the network 'small' (created, not yet placed)."""
    c = cluster_factory(2, step_timeout=STEP_TIMEOUT)
    c.control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=small_lm_yaml()), timeout=TIMEOUT)
    return c


@pytest.fixture()
def pnode(cluster: Cluster, channels: list[grpc.Channel]) -> node_pb2_grpc.VNodeServiceStub:
    """The VNodeService of the cluster's first PNode, called directly with the orchestrator's certificate."""
    return vnode_stub(channels, cluster.pnodes[0].address, cluster.orch.identity)


# -- 1. protocol versions -----------------------------------------------------------------------

@pytest.mark.parametrize("version, theirs", [(ALIEN, "99.3.1"), (common_pb2.ProtocolVersion(), "0.0.0")],
                         ids=["major-99", "missing"])
def test_registering_with_another_major_version_is_refused_naming_both_versions(
        cluster: Cluster, channels: list[grpc.Channel], version: common_pb2.ProtocolVersion, theirs: str) -> None:
    request = node_pb2.RegisterPNodeRequest(id=cluster.stranger_id, version=version, address="127.0.0.1:1",
                                            hardware=node_pb2.Hardware(cpu_cores=1, device="cpu"))
    refused(lambda: cluster.nodes.RegisterPNode(request, timeout=TIMEOUT), grpc.StatusCode.FAILED_PRECONDITION,
            "incompatible protocol version", theirs, MINE)
    listed = cluster.control.ListPNodes(orchestrator_pb2.ListRequest(), timeout=TIMEOUT).pnodes
    assert sorted(p.id for p in listed) == sorted(cluster.ids.values()), "a refused PNode must not join the fleet"
    assert_serving(cluster, channels)


@pytest.mark.parametrize("method", ["PlaceNetwork", "BeginRun"])
def test_a_placement_or_run_with_another_major_version_is_refused_by_the_pnode(
        cluster: Cluster, pnode: node_pb2_grpc.VNodeServiceStub, channels: list[grpc.Channel], method: str) -> None:
    if method == "PlaceNetwork":
        text = small_lm_yaml()
        request: Any = node_pb2.PlaceNetworkRequest(version=ALIEN, network="small", yaml=text,
                                                    digest=network_digest(text))
    else:
        request = node_pb2.BeginRunRequest(version=ALIEN, run=common_pb2.Run(network="small", id="r", kind="train"))
    refused(lambda: getattr(pnode, method)(request, timeout=TIMEOUT), grpc.StatusCode.FAILED_PRECONDITION,
            "incompatible protocol version 99.3.1", MINE)
    assert_serving(cluster, channels)


def test_a_progress_report_with_another_major_version_is_refused(
        cluster: Cluster, channels: list[grpc.Channel]) -> None:
    report = node_pb2.ProgressReport(version=ALIEN, pnode=cluster.stranger_id, events=[node_pb2.ProgressEvent(
        kind=node_pb2.ProgressEvent.FAILED, vnode="embedder", error="x", network="small", run="r")])
    refused(lambda: cluster.nodes.ReportProgress(report, timeout=TIMEOUT), grpc.StatusCode.FAILED_PRECONDITION,
            "incompatible protocol version 99.3.1", MINE)
    assert_serving(cluster, channels)


# -- 2, 3. malformed tensors ----------------------------------------------------------------------

MALFORMED = [(bad_bytes, "tensor data has 63 bytes, but int64 × [1, 8] needs 64"),
             (bad_dtype, "unknown dtype 'complex32'")]


@pytest.mark.parametrize("value, text", MALFORMED, ids=["bytes-vs-shape", "unknown-dtype"])
def test_a_malformed_tensor_in_a_hop_is_invalid_argument(
        cluster: Cluster, pnode: node_pb2_grpc.VNodeServiceStub, channels: list[grpc.Channel],
        value: Callable[[], common_pb2.Value], text: str) -> None:
    refused(lambda: pnode.ReceiveTrainRequest(hop(value=value()), timeout=TIMEOUT),
            grpc.StatusCode.INVALID_ARGUMENT, text)
    assert_serving(cluster, channels)


@pytest.mark.parametrize("value, text", MALFORMED, ids=["bytes-vs-shape", "unknown-dtype"])
def test_a_malformed_gradient_in_a_hop_is_invalid_argument(
        cluster: Cluster, pnode: node_pb2_grpc.VNodeServiceStub, channels: list[grpc.Channel],
        value: Callable[[], common_pb2.Value], text: str) -> None:
    request = node_pb2.GradientHop(network="small", run="test", vnode="embedder", edge=0, has_gradient=True,
                                   gradient=value().tensor)
    peer = vnode_stub(channels, cluster.pnodes[0].address, cluster.stranger)  # gradients come from PNodes
    refused(lambda: peer.ReceiveTrainResponse(request, timeout=TIMEOUT), grpc.StatusCode.INVALID_ARGUMENT, text)
    assert_serving(cluster, channels)


@pytest.mark.parametrize("value, text", MALFORMED, ids=["bytes-vs-shape", "unknown-dtype"])
@pytest.mark.parametrize("rpc", ["ForwardNetwork", "TrainNetwork"])
def test_a_malformed_tensor_sent_to_the_orchestrator_is_invalid_argument(
        cluster: Cluster, channels: list[grpc.Channel], rpc: str, value: Callable[[], common_pb2.Value],
        text: str) -> None:
    def call() -> Any:
        if rpc == "ForwardNetwork":
            return cluster.control.ForwardNetwork(orchestrator_pb2.ForwardRequest(
                network="small", inputs=named(tokens=value())), timeout=TIMEOUT)
        return cluster.control.TrainNetwork(orchestrator_pb2.TrainRequest(
            network="small", inputs=named(tokens=value(), targets=ids(1, SEQ))), timeout=TIMEOUT)

    refused(call, grpc.StatusCode.INVALID_ARGUMENT, text)
    assert_serving(cluster, channels)


# -- 4. unknown names -------------------------------------------------------------------------------

def _listen(c: Cluster, session: str) -> list[orchestrator_pb2.StepEvent]:
    return list(c.control.ListenTrainSession(orchestrator_pb2.SessionRef(id=session), timeout=TIMEOUT))


def _chat(c: Cluster, vocabulary: str) -> list[orchestrator_pb2.ChatChunk]:
    return list(c.control.ChatNetwork(orchestrator_pb2.ChatRequest(
        network="small", prompt="the quick", vocabulary=vocabulary, max_new_tokens=2), timeout=TIMEOUT))


def _upload(c: Cluster, vocabulary: str) -> orchestrator_pb2.DatasetInfo:
    msgs = [orchestrator_pb2.DatasetUpload(name="d2", vocabulary=vocabulary),
            orchestrator_pb2.DatasetUpload(text="the quick brown fox")]
    return c.control.CreateDataset(iter(msgs), timeout=TIMEOUT)


def _peer(c: Cluster, request: Any, method: str = "ReceiveTrainRequest", placed: bool = False) -> Any:
    if placed:  # a forward places the network on the PNodes
        c.control.ForwardNetwork(orchestrator_pb2.ForwardRequest(network="small", inputs=named(tokens=ids(1, SEQ))),
                                 timeout=TIMEOUT)
    host = c.orch.store.placements("small").get(getattr(request, "vnode", ""))  # the VNode's PNode, once placed
    address = next((p.address for p in c.pnodes if p.id == host), c.pnodes[0].address)
    with to_pnode(address, c.orch.identity) as channel:
        return getattr(node_pb2_grpc.VNodeServiceStub(channel), method)(request, timeout=TIMEOUT)


OP, NP = orchestrator_pb2, node_pb2
UNKNOWN: list[tuple[str, Thunk, str]] = [
    # networks
    ("GetNetwork", lambda c: c.control.GetNetwork(OP.NetworkRef(name="nope"), timeout=TIMEOUT),
     "unknown network 'nope'"),
    ("ForwardNetwork", lambda c: c.control.ForwardNetwork(OP.ForwardRequest(
        network="nope", inputs=named(tokens=ids(1, SEQ))), timeout=TIMEOUT), "unknown network 'nope'"),
    ("TrainNetwork", lambda c: c.control.TrainNetwork(OP.TrainRequest(
        network="nope", inputs=named(tokens=ids(1, SEQ), targets=ids(1, SEQ))), timeout=TIMEOUT),
     "unknown network 'nope'"),
    ("CreateTrainSession", lambda c: c.control.CreateTrainSession(OP.CreateTrainSessionRequest(
        network="nope", dataset="d", steps=1, batch_size=2), timeout=TIMEOUT), "unknown network 'nope'"),
    ("hop-network", lambda c: _peer(c, hop(network="nope")), "network 'nope' is not placed on PNode pn-"),
    ("ApplyUpdate-network", lambda c: _peer(c, NP.ApplyUpdateRequest(network="nope", apply=True, step=1),
                                            "ApplyUpdate"), "network 'nope' is not placed on PNode pn-"),
    ("CheckFinite-network", lambda c: _peer(c, NP.NetworkStepRequest(network="nope"), "CheckFinite"),
     "network 'nope' is not placed on PNode pn-"),
    # sessions
    ("StartTrainSession", lambda c: c.control.StartTrainSession(OP.SessionRef(id="nope"), timeout=TIMEOUT),
     "unknown session 'nope'"),
    ("SuspendTrainSession", lambda c: c.control.SuspendTrainSession(OP.SessionRef(id="nope"), timeout=TIMEOUT),
     "unknown session 'nope'"),
    ("DeleteTrainSession", lambda c: c.control.DeleteTrainSession(OP.SessionRef(id="nope"), timeout=TIMEOUT),
     "unknown session 'nope'"),
    ("ListenTrainSession", lambda c: _listen(c, "nope"), "unknown session 'nope'"),
    # VNodes of a real network
    ("hop-vnode", lambda c: _peer(c, hop(vnode="nope"), placed=True), "network 'small' has no VNode 'nope'"),
    ("hop-run", lambda c: _peer(c, hop(), placed=True), "run 'test' of network 'small' is unknown to PNode pn-"),
    ("Save-vnode", lambda c: _peer(c, NP.SaveRequest(network="small", vnode="nope"), "Save", placed=True),
     "network 'small' has no VNode 'nope'"),
    # datasets
    ("CreateTrainSession-dataset", lambda c: c.control.CreateTrainSession(OP.CreateTrainSessionRequest(
        network="small", dataset="nope", steps=1, batch_size=2), timeout=TIMEOUT), "unknown dataset 'nope'"),
    ("ExploreDataset", lambda c: c.control.ExploreDataset(OP.ExploreDatasetRequest(name="nope"), timeout=TIMEOUT),
     "unknown dataset 'nope'"),
    ("ValidateNetwork", lambda c: c.control.ValidateNetwork(OP.ValidateRequest(
        network="small", dataset="nope", batches=1, batch_size=2), timeout=TIMEOUT), "unknown dataset 'nope'"),
    # vocabularies
    ("ChatNetwork", lambda c: _chat(c, "nope"), "unknown vocabulary 'nope'"),
    ("CreateDataset", lambda c: _upload(c, "nope"), "unknown vocabulary 'nope'"),
]


@pytest.mark.parametrize("call, text", [(c, t) for _, c, t in UNKNOWN], ids=[n for n, _, _ in UNKNOWN])
def test_an_unknown_name_is_not_found_and_named(
        cluster: Cluster, channels: list[grpc.Channel], call: Thunk, text: str) -> None:
    refused(lambda: call(cluster), grpc.StatusCode.NOT_FOUND, text)
    listed = cluster.control.ListDatasets(orchestrator_pb2.ListRequest(), timeout=TIMEOUT).datasets
    assert list(listed) == [], "a refused upload must leave no dataset behind"
    assert_serving(cluster, channels)


# -- 5. oversize messages ------------------------------------------------------------------------------

def test_the_orchestrator_refuses_an_oversize_message_and_goes_on(tmp_path: Path) -> None:
    orch = Orchestrator(tmp_path / "state", max_message_bytes=LIMIT)
    port = orch.start("127.0.0.1:0")
    channel = to_orchestrator(f"127.0.0.1:{port}", orch.ca.cert_pem, token=ClientConfig.load(orch.admin_config).token)
    try:
        control = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        text = small_lm_yaml()
        huge = text + "# " + "x" * 100_000 + "\n"
        assert dcnr.parse_network(huge).name == "small", "the oversize YAML itself is valid"
        refused(lambda: control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=huge), timeout=TIMEOUT),
                grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max", str(LIMIT))
        big = torch.zeros(LIMIT // (8 * SEQ) + 16, SEQ, dtype=torch.long)  # int64 rows of 8: just over the limit
        refused(lambda: control.ForwardNetwork(orchestrator_pb2.ForwardRequest(
            network="small", inputs=named(tokens=big)), timeout=TIMEOUT), grpc.StatusCode.RESOURCE_EXHAUSTED,
            "larger than max")
        assert control.Health(common_pb2.HealthRequest(), timeout=TIMEOUT).status == "serving"
        info = control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=text), timeout=TIMEOUT)
        assert info.name == "small" and info.vnodes > 0
    finally:
        channel.close()
        orch.stop(grace=0.5)


def test_a_pnode_refuses_an_oversize_tensor_and_goes_on(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path)
    solo, identity = pnode_identity(ca)
    hops = GrpcHopTransport(pnode_channels(identity, LIMIT))
    runtime = PNodeRuntime(solo, hops)
    runtime.start()
    server, port = serve_pnode(runtime, identity, "127.0.0.1:0", threads=2, max_message_bytes=LIMIT)
    channel = to_pnode(f"127.0.0.1:{port}", orchestrator_identity(ca, tmp_path),
                       options=[("grpc.max_send_message_length", 4 * LIMIT)])
    try:
        text = small_lm_yaml()
        spec = dcnr.parse_network(text)
        GrpcPNodeClient(channel, timeout=TIMEOUT).place_network(Placement(
            "small", text, 0, network_digest(text), 1, 0, dict.fromkeys(spec.nodes, solo), {solo: "unused:1"}))
        stub = node_pb2_grpc.VNodeServiceStub(channel)
        big = torch.zeros(1, LIMIT // 64 + 16, 16)  # float32 × 16 per position: just over the limit
        refused(lambda: stub.ReceiveTrainRequest(hop("b0_ln1", big), timeout=TIMEOUT),
                grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max", str(LIMIT))
        assert_pnode_serves(stub)
        refused(lambda: stub.ReceiveTrainRequest(hop("b0_ln1", torch.zeros(1, SEQ, 16)), timeout=TIMEOUT),
                grpc.StatusCode.NOT_FOUND, "run 'test'")  # still checking what it receives
    finally:
        channel.close()
        server.stop(grace=None)
        runtime.stop()
        hops.close()


# -- 6, 7. membership ---------------------------------------------------------------------------------

def test_registering_under_another_pnodes_id_is_permission_denied(
        cluster: Cluster, channels: list[grpc.Channel]) -> None:
    """Ids derive from keys: a stranger cannot take over a live PNode's id (and with it its VNodes)."""
    first = cluster.pnodes[0]
    request = node_pb2.RegisterPNodeRequest(id=first.id, version=version_message(), address="127.0.0.1:1",
                                            hardware=node_pb2.Hardware(cpu_cores=1, device="cpu"))
    refused(lambda: cluster.nodes.RegisterPNode(request, timeout=TIMEOUT), grpc.StatusCode.PERMISSION_DENIED,
            f"may not act for PNode {first.id!r}")
    rows = {p.id: p for p in cluster.control.ListPNodes(orchestrator_pb2.ListRequest(), timeout=TIMEOUT).pnodes}
    assert rows[first.id].address == first.address and rows[first.id].state == "alive", \
        "the refused registration must not replace the live PNode"
    assert_serving(cluster, channels)


def test_a_stranger_cannot_unregister_a_pnode_or_inject_hops(cluster: Cluster, channels: list[grpc.Channel]) -> None:
    """Anyone may enrol, but a certificate gives no power over other PNodes: unregistering one (it would drop
    its VNodes) is refused, and so is a hop for an edge whose sending VNode another PNode hosts."""
    victim = cluster.pnodes[0]
    refused(lambda: cluster.nodes.UnregisterPNode(node_pb2.PNodeRef(id=victim.id), timeout=TIMEOUT),
            grpc.StatusCode.PERMISSION_DENIED, f"may not act for PNode {victim.id!r}")
    cluster.control.ForwardNetwork(orchestrator_pb2.ForwardRequest(network="small", inputs=named(tokens=ids(1, SEQ))),
                                   timeout=TIMEOUT)  # placed now
    deployment = cluster.orch.driver.deploy(cluster.orch.driver.network("small"))
    target = next(p for p in cluster.pnodes if p.id == deployment.assignments["b0_ln1"])
    vnode_stub(channels, target.address, cluster.orch.identity).BeginRun(node_pb2.BeginRunRequest(  # a live run
        version=version_message(), run=common_pb2.Run(network="small", id="live", kind="infer", micro_batches=1,
                                                      digest=deployment.digest,
                                                      placement_version=deployment.version)), timeout=TIMEOUT)
    injected = node_pb2.HopRequest(network="small", run="live", vnode="b0_ln1", slot=0,
                                   value=codec.encode_value(torch.zeros(1, SEQ, 16)))
    stub = vnode_stub(channels, target.address, cluster.stranger)
    refused(lambda: stub.ReceiveTrainRequest(injected, timeout=TIMEOUT), grpc.StatusCode.PERMISSION_DENIED,
            f"PNode {cluster.stranger_id} may not send fwd hops to 'b0_ln1'")
    rows = {p.id: p.state for p in cluster.control.ListPNodes(orchestrator_pb2.ListRequest(), timeout=TIMEOUT).pnodes}
    assert rows[victim.id] == "alive"
    assert_serving(cluster, channels)


def test_registering_a_live_pnode_again_is_already_exists(cluster: Cluster, channels: list[grpc.Channel]) -> None:
    """The holder of a live PNode's key (a second process on its state directory) is refused too."""
    first = cluster.pnodes[0]
    with to_orchestrator(f"127.0.0.1:{cluster.peer_port}", cluster.ca_pem, first.identity) as channel:
        request = node_pb2.RegisterPNodeRequest(id=first.id, version=version_message(), address="127.0.0.1:1",
                                                hardware=node_pb2.Hardware(cpu_cores=1, device="cpu"))
        refused(lambda: node_pb2_grpc.NodeManagementServiceStub(channel).RegisterPNode(request, timeout=TIMEOUT),
                grpc.StatusCode.ALREADY_EXISTS, f"PNode {first.id!r} is already registered")
    assert_serving(cluster, channels)


def test_registering_without_a_port_is_invalid_argument(cluster: Cluster, channels: list[grpc.Channel]) -> None:
    request = node_pb2.RegisterPNodeRequest(id=cluster.stranger_id, version=version_message(), address="no-port")
    refused(lambda: cluster.nodes.RegisterPNode(request, timeout=TIMEOUT), grpc.StatusCode.INVALID_ARGUMENT,
            "host:port")
    assert_serving(cluster, channels)


def test_heartbeats_for_another_pnode_are_refused_and_unknown_ones_not_found(
        cluster: Cluster, channels: list[grpc.Channel]) -> None:
    refused(lambda: cluster.nodes.HeartbeatPNode(node_pb2.HeartbeatRequest(id=cluster.p("p0"), load=0.5),
                                                 timeout=TIMEOUT), grpc.StatusCode.PERMISSION_DENIED, "may not act")
    refused(lambda: cluster.nodes.HeartbeatPNode(node_pb2.HeartbeatRequest(id=cluster.stranger_id, load=0.5),
                                                 timeout=TIMEOUT), grpc.StatusCode.NOT_FOUND, "unknown PNode")
    assert_serving(cluster, channels)


# -- 8. network definitions ------------------------------------------------------------------------------

def _bad_definitions() -> list[tuple[str, str]]:
    good = small_lm_yaml(name="broken")
    assert "type: layernorm" in good
    return [
        ("syntax", "name: broken\nnodes: [\n  - id: a\n"),
        ("unknown-type", good.replace("type: layernorm", "type: layernorn", 1)),
        ("not-a-mapping", "- just\n- a list\n"),
        ("empty", ""),
        ("dangling-edge", good.replace("edges:\n", "edges:\n- {from: nowhere, to: ln_f}\n", 1)),
    ]


@pytest.mark.parametrize("rpc", ["CreateNetwork", "UpdateNetwork"])
@pytest.mark.parametrize("kind, text", _bad_definitions(), ids=[k for k, _ in _bad_definitions()])
def test_an_invalid_definition_gets_exactly_the_cli_messages(
        cluster: Cluster, channels: list[grpc.Channel], rpc: str, kind: str, text: str) -> None:
    source = "nets/broken.yaml"
    with pytest.raises(dcnr.NetworkError) as local:
        dcnr.parse_network(text, source=source)
    want = "\n".join(local.value.problems)
    assert source in want

    def call() -> Any:
        if rpc == "CreateNetwork":
            return cluster.control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(
                yaml=text, source=source), timeout=TIMEOUT)
        return cluster.control.UpdateNetwork(orchestrator_pb2.UpdateNetworkRequest(
            name="small", yaml=text, source=source), timeout=TIMEOUT)

    assert refused(call, grpc.StatusCode.INVALID_ARGUMENT) == want
    names = [n.name for n in cluster.control.ListNetworks(orchestrator_pb2.ListRequest(), timeout=TIMEOUT).networks]
    assert names == ["small"]
    assert_serving(cluster, channels)


def test_a_duplicate_network_name_is_already_exists(cluster: Cluster, channels: list[grpc.Channel]) -> None:
    refused(lambda: cluster.control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=small_lm_yaml()),
                                                  timeout=TIMEOUT),
            grpc.StatusCode.ALREADY_EXISTS, "network 'small' already exists")
    assert_serving(cluster, channels)


@pytest.mark.parametrize("name", ["../x", "a/b", "-lead", "x" * 65, "sp ace"])
def test_an_invalid_network_name_is_invalid_argument(
        cluster: Cluster, channels: list[grpc.Channel], name: str) -> None:
    refused(lambda: cluster.control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(
        yaml=small_lm_yaml(), name=name), timeout=TIMEOUT), grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid network name {name!r}")
    names = [n.name for n in cluster.control.ListNetworks(orchestrator_pb2.ListRequest(), timeout=TIMEOUT).networks]
    assert names == ["small"]
    assert_serving(cluster, channels)


# -- 9. sessions ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, batch_size, micro_batches, texts", [
    (2, 3, 2, ("batch size 3", "micro-batches 2")),
    (2, 0, 1, ("batch size 0",)),
    (0, 2, 1, ("steps must be at least 1, got 0",)),
], ids=["batch-not-divisible", "batch-zero", "steps-zero"])
def test_invalid_session_settings_are_invalid_argument(
        cluster: Cluster, channels: list[grpc.Channel], steps: int, batch_size: int, micro_batches: int,
        texts: tuple[str, ...]) -> None:
    add_data(cluster.client)
    request = orchestrator_pb2.CreateTrainSessionRequest(network="small", dataset="d", steps=steps,
                                                         batch_size=batch_size, micro_batches=micro_batches)
    refused(lambda: cluster.control.CreateTrainSession(request, timeout=TIMEOUT),
            grpc.StatusCode.INVALID_ARGUMENT, *texts)
    assert cluster.control.ListTrainSessions(orchestrator_pb2.ListRequest(), timeout=TIMEOUT).sessions == []
    assert_serving(cluster, channels)


def test_starting_a_completed_session_is_failed_precondition(
        cluster: Cluster, channels: list[grpc.Channel]) -> None:
    add_data(cluster.client)
    c = cluster.control
    s = c.CreateTrainSession(orchestrator_pb2.CreateTrainSessionRequest(
        network="small", dataset="d", steps=1, batch_size=2, seed=1), timeout=TIMEOUT)
    c.StartTrainSession(orchestrator_pb2.SessionRef(id=s.id), timeout=TIMEOUT)
    events = _listen(cluster, s.id)
    assert events and events[-1].state == "completed", events
    ref = orchestrator_pb2.SessionRef(id=s.id)
    refused(lambda: c.StartTrainSession(ref, timeout=TIMEOUT), grpc.StatusCode.FAILED_PRECONDITION,
            f"session {s.id} is completed")
    refused(lambda: c.SuspendTrainSession(ref, timeout=TIMEOUT), grpc.StatusCode.FAILED_PRECONDITION,
            f"session {s.id} is already completed")
    assert [x.state for x in c.ListTrainSessions(orchestrator_pb2.ListRequest(), timeout=TIMEOUT).sessions] == \
        ["completed"]
    assert_serving(cluster, channels)


# -- 10. bad training inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("inputs, micro_batches, texts", [
    ({"tokenz": ids(2, SEQ), "targets": ids(2, SEQ)}, 1, ("unknown input(s) 'tokenz'",)),
    ({"tokens": ids(2, SEQ)}, 1, ("missing input(s) 'targets'",)),
    ({"tokens": ids(2, SEQ), "targets": ids(3, SEQ)}, 1, ("different batch sizes", "'targets' 3", "'tokens' 2")),
    ({"tokens": ids(2, SEQ), "targets": ids(2, SEQ)}, 3, ("input 'tokens'", "batch of 2", "3 equal micro-batches")),
], ids=["unknown-input", "missing-input", "batch-mismatch", "batch-not-divisible"])
def test_bad_training_inputs_are_invalid_argument_and_do_not_poison_the_next_step(
        cluster: Cluster, channels: list[grpc.Channel], inputs: dict[str, torch.Tensor], micro_batches: int,
        texts: tuple[str, ...]) -> None:
    refused(lambda: cluster.control.TrainNetwork(orchestrator_pb2.TrainRequest(
        network="small", inputs=named(**inputs), micro_batches=micro_batches), timeout=TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT, *texts)
    x, y = ids(2, SEQ, seed=1), ids(2, SEQ, seed=2)
    reply = train(cluster, x, y)
    assert reply.step == 1, "the refused step must not count"
    want = dcnr.LocalExecutor(dcnr.parse_network(small_lm_yaml())).train_step({"tokens": x, "targets": y})
    assert math.isfinite(reply.costs["ce_loss"]) and reply.costs["ce_loss"] == want["ce_loss"]
    assert_serving(cluster, channels)


# -- 11. a VNode failing during a step ------------------------------------------------------------------------

def _out_of_range(where: str, rows: slice, value: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def spoil(x: torch.Tensor, y: torch.Tensor) -> None:
        (x if where == "tokens" else y)[rows] = value
    return spoil


@pytest.mark.parametrize("spoil, micro_batches, vnode, text", [
    (_out_of_range("tokens", slice(None), VOCAB), 1, "embedder", "token id out of range"),
    (_out_of_range("tokens", slice(0, 1), -1), 1, "embedder", "token id out of range"),
    (_out_of_range("targets", slice(None), VOCAB), 1, "loss", "out of bounds"),
    (_out_of_range("tokens", slice(2, 4), VOCAB), 2, "embedder", "token id out of range"),
], ids=["token-too-big", "token-negative", "target-too-big", "token-too-big-in-second-micro-batch"])
@pytest.mark.parametrize("pnodes", [1, 2])
def test_a_vnode_failing_mid_step_aborts_the_step_promptly_and_the_next_step_is_clean(
        cluster_factory: Callable[..., Cluster], channels: list[grpc.Channel], pnodes: int,
        spoil: Callable[[torch.Tensor, torch.Tensor], None], micro_batches: int, vnode: str, text: str) -> None:
    """The step fails at once with ABORTED naming the VNode (not after the step timeout); the following
    steps train exactly as if the failed one had never been sent (late work of the failed attempt is fenced off)."""
    cluster = cluster_factory(pnodes, step_timeout=STEP_TIMEOUT)
    text_yaml = small_lm_yaml()
    cluster.control.CreateNetwork(orchestrator_pb2.CreateNetworkRequest(yaml=text_yaml), timeout=TIMEOUT)
    bad_x, bad_y = ids(4, SEQ, seed=3), ids(4, SEQ, seed=4)
    spoil(bad_x, bad_y)
    started = time.monotonic()
    refused(lambda: train(cluster, bad_x, bad_y, micro_batches), grpc.StatusCode.ABORTED, f"VNode {vnode!r}", text)
    assert time.monotonic() - started < STEP_TIMEOUT / 2, "the failure must be reported, not timed out"

    ex = dcnr.LocalExecutor(dcnr.parse_network(text_yaml))
    for seed in (5, 6):
        x, y = ids(4, SEQ, seed=seed), ids(4, SEQ, seed=seed + 10)
        reply = train(cluster, x, y, micro_batches)  # a hang here ends as ABORTED "... timed out after 8 s"
        want = ex.train_step({"tokens": x, "targets": y}, micro_batches=micro_batches)["ce_loss"]
        got = reply.costs["ce_loss"]
        assert math.isfinite(got) and got == want, \
            f"step {reply.step} after the failed one: cost {got!r}, but the LocalExecutor gives {want!r}"
    assert reply.step == 2, "the failed step must not count"
    assert_serving(cluster, channels)


# -- 12. limits on what one request may ask ---------------------------------------------------------------------

HUGE = 2**32 - 1  # the largest uint32 a request can carry
RE = grpc.StatusCode.RESOURCE_EXHAUSTED
LIMITS = Limits(max_artifact_bytes=1 << 20, max_network_yaml_bytes=32 * 1024, max_document_bytes=1024,
                max_dataset_bytes=64 * 1024, max_vocabulary_bytes=256 * 1024, max_vocab_size=1000,
                max_batch_size=64, max_validation_batches=8, max_chat_tokens=16)


def _counted(first: Any, rest: Callable[[], Any], count: int, sent: list[int]) -> Iterator[Any]:
    """`first`, then `count` messages made by `rest`; `sent` counts those the client took."""
    yield first
    for _ in range(count):
        sent[0] += 1
        yield rest()


def _names(cluster: Cluster) -> dict[str, list[str]]:
    """What the orchestrator holds, by kind."""
    c, everything = cluster.control, orchestrator_pb2.ListRequest()
    return {"networks": [n.name for n in c.ListNetworks(everything, timeout=TIMEOUT).networks],
            "datasets": [d.name for d in c.ListDatasets(everything, timeout=TIMEOUT).datasets],
            "vocabularies": [v.name for v in c.ListVocabularies(everything, timeout=TIMEOUT).vocabularies],
            "sessions": [s.id for s in c.ListTrainSessions(everything, timeout=TIMEOUT).sessions]}


def test_an_upload_over_its_limit_is_refused_while_it_streams_and_the_orchestrator_goes_on(
        cluster_factory: Callable[..., Cluster], channels: list[grpc.Channel], tmp_path: Path) -> None:
    cluster = cluster_factory(2, step_timeout=STEP_TIMEOUT, limits=LIMITS)
    c = cluster.control
    c.CreateNetwork(OP.CreateNetworkRequest(yaml=small_lm_yaml()), timeout=TIMEOUT)
    add_data(cluster.client)
    before = _names(cluster)
    # each stream offers 16 MiB: far more than its limit, and more than gRPC buffers between client and server
    uploads: list[tuple[str, Callable[[list[int]], Any], int, str]] = [
        ("ImportNetwork", lambda sent: c.ImportNetwork(_counted(
            OP.BlobChunk(name="big"), lambda: OP.BlobChunk(data=bytes(64 * 1024)), 256, sent), timeout=TIMEOUT),
         256, "the imported network artifact is over the limit of 1048576 bytes (max_artifact_bytes)"),
        ("CreateDataset-document", lambda sent: c.CreateDataset(_counted(
            OP.DatasetUpload(name="big", vocabulary="v"), lambda: OP.DatasetUpload(text="x" * 1024), 16384, sent),
            timeout=TIMEOUT), 16384, "dataset 'big': document 1 is over the limit of 1024 bytes (max_document_bytes)"),
        ("CreateDataset-text", lambda sent: c.CreateDataset(_counted(
            OP.DatasetUpload(name="big", vocabulary="v"),
            lambda: OP.DatasetUpload(text="y" * 1024, end_of_document=True), 16384, sent), timeout=TIMEOUT),
         16384, "dataset 'big': the text is over the limit of 65536 bytes (max_dataset_bytes)"),
    ]
    for what, call, total, text in uploads:
        sent = [0]
        refused(functools.partial(call, sent), RE, text)
        assert sent[0] < total // 2, f"{what}: the client sent {sent[0]} of {total} messages: read to the end"
        assert _names(cluster) == before, what
    artifact = tmp_path / "small.safetensors"
    assert 0 < cluster.client.export_network("small", artifact) <= LIMITS.max_artifact_bytes
    assert cluster.client.import_network(artifact, "copy").name == "copy"
    assert cluster.client.create_dataset("big", "v", TEXTS[:50]).tokens > 0  # the name was left free
    assert_serving(cluster, channels)


def _padded_tokenizer() -> str:
    tok = Tokenizer.from_str(train_vocabulary(TEXTS, 300).to_str())
    tok.enable_padding(length=2**30)  # every document would become 2**30 ids
    return tok.to_str()


def test_a_request_over_a_limit_is_refused_before_any_work_and_changes_nothing(
        cluster_factory: Callable[..., Cluster], channels: list[grpc.Channel]) -> None:
    cluster = cluster_factory(2, step_timeout=STEP_TIMEOUT, limits=LIMITS)
    cluster.control.CreateNetwork(OP.CreateNetworkRequest(yaml=small_lm_yaml()), timeout=TIMEOUT)
    add_data(cluster.client)
    before = _names(cluster)
    requests: list[tuple[str, Thunk, grpc.StatusCode, str]] = [
        ("train-micro-batches", lambda c: c.control.TrainNetwork(OP.TrainRequest(
            network="small", inputs=named(tokens=ids(2, SEQ), targets=ids(2, SEQ)), micro_batches=HUGE),
            timeout=TIMEOUT),
         RE, f"micro_batches {HUGE} is over the limit of 1024 (max_micro_batches)"),
        ("train-batch", lambda c: c.control.TrainNetwork(OP.TrainRequest(
            network="small", inputs=named(tokens=ids(65, SEQ), targets=ids(65, SEQ))), timeout=TIMEOUT),
         RE, "input 'tokens': a batch of 65 is over the limit of 64 (max_batch_size)"),
        ("forward-batch", lambda c: c.control.ForwardNetwork(OP.ForwardRequest(
            network="small", inputs=named(tokens=ids(65, SEQ))), timeout=TIMEOUT),
         RE, "input 'tokens': a batch of 65 is over the limit of 64"),
        ("forward-empty-but-huge", lambda c: c.control.ForwardNetwork(OP.ForwardRequest(  # refused as it is decoded
            network="small", inputs=named(tokens=torch.zeros(HUGE, 0, dtype=torch.long))), timeout=TIMEOUT),
         grpc.StatusCode.INVALID_ARGUMENT, f"shape [{HUGE}, 0] is too large"),
        ("session-micro-batches", lambda c: c.control.CreateTrainSession(OP.CreateTrainSessionRequest(
            network="small", dataset="d", steps=1, batch_size=2, micro_batches=HUGE), timeout=TIMEOUT),
         RE, f"micro_batches {HUGE} is over the limit of 1024"),
        ("session-batch", lambda c: c.control.CreateTrainSession(OP.CreateTrainSessionRequest(
            network="small", dataset="d", steps=1, batch_size=HUGE), timeout=TIMEOUT),
         RE, f"batch_size {HUGE} is over the limit of 64 (max_batch_size)"),
        ("validate-batches", lambda c: c.control.ValidateNetwork(OP.ValidateRequest(
            network="small", dataset="d", batches=HUGE), timeout=TIMEOUT),
         RE, f"batches {HUGE} is over the limit of 8 (max_validation_batches)"),
        ("validate-batch", lambda c: c.control.ValidateNetwork(OP.ValidateRequest(
            network="small", dataset="d", batch_size=HUGE), timeout=TIMEOUT), RE, f"batch_size {HUGE}"),
        ("chat-tokens", lambda c: list(c.control.ChatNetwork(OP.ChatRequest(
            network="small", prompt="the", vocabulary="v", max_new_tokens=HUGE), timeout=TIMEOUT)),
         RE, f"max_new_tokens {HUGE} is over the limit of 16 (max_chat_tokens)"),
        ("network-yaml", lambda c: c.control.CreateNetwork(OP.CreateNetworkRequest(
            yaml=small_lm_yaml("big") + "#" * 32 * 1024 + "\n", source="big.yaml"), timeout=TIMEOUT),
         RE, "big.yaml: the network definition is over the limit of 32768 bytes (max_network_yaml_bytes)"),
        ("vocabulary-json", lambda c: c.control.CreateVocabulary(OP.CreateVocabularyRequest(
            name="w", tokenizer_json=" " * (256 * 1024 + 1)), timeout=TIMEOUT),
         RE, "vocabulary 'w': the tokenizer JSON is over the limit of 262144 bytes (max_vocabulary_bytes)"),
        ("vocabulary-size", lambda c: c.control.CreateVocabulary(OP.CreateVocabularyRequest(
            name="w", texts=TEXTS, vocab_size=HUGE), timeout=TIMEOUT),
         RE, f"vocabulary 'w': vocab_size {HUGE} is over the limit of 1000 (max_vocab_size)"),
        ("vocabulary-garbage", lambda c: c.control.CreateVocabulary(OP.CreateVocabularyRequest(
            name="w", tokenizer_json='{"model": '), timeout=TIMEOUT),
         grpc.StatusCode.INVALID_ARGUMENT, "vocabulary 'w': not a valid tokenizer JSON"),
        ("vocabulary-padding", lambda c: c.control.CreateVocabulary(OP.CreateVocabularyRequest(
            name="w", tokenizer_json=_padded_tokenizer()), timeout=TIMEOUT),
         grpc.StatusCode.INVALID_ARGUMENT, "vocabulary 'w': the tokenizer pads its encodings"),
    ]
    for what, call, code, text in requests:
        started = time.monotonic()
        refused(functools.partial(call, cluster), code, text)
        assert time.monotonic() - started < 5, f"{what}: refused only after {time.monotonic() - started:.1f} s"
        assert _names(cluster) == before, what
    assert cluster.control.GetNetwork(OP.NetworkRef(name="small"), timeout=TIMEOUT).step == 0
    assert train(cluster, ids(2, SEQ), ids(2, SEQ)).step == 1  # and the next real request is served
    assert_serving(cluster, channels)
