"""A PNode's gRPC services on loopback: a run through the real wire gives the executor's answer;
every kind of bad request gets the right status and the server keeps serving."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
import yaml
from tls_helpers import orchestrator_identity, pnode_identity, to_pnode

import dcnr
from dcnr.pnode.host import VNodeHost
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.proto.v2 import common_pb2, node_pb2, node_pb2_grpc
from dcnr.proto.version import PROTOCOL_VERSION
from dcnr.security.pki import CertificateAuthority
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.pnode import (
    GrpcHopTransport,
    GrpcPNodeClient,
    placement_from_pb,
    placement_to_pb,
    pnode_channels,
    serve_pnode,
)
from dcnr.transport.grpc.security import Identity
from dcnr.transport.messages import Hop, Placement, Report, Run, network_digest

LIMIT = 64 * 1024
TEXT = yaml.safe_dump(transformer_lm("svc", blocks=1, heads=2, head_dim=4, dim=8, seq_len=6, vocab_size=30,
                                     dropout=0.0))
SPEC = dcnr.parse_network(TEXT)
PLACEMENT = Placement("svc", TEXT, 3, network_digest(TEXT), 1, 0, {}, {})  # every VNode on the PNode under test


class Reports:
    def __init__(self) -> None:
        self.got: list[Report] = []

    def report(self, pnode: str, reports: Sequence[Report]) -> None:
        self.got.extend(reports)

    def wait(self, what: Callable[[list[Report]], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not what(self.got):
            assert time.monotonic() < deadline, f"no such report in time: {self.got}"
            time.sleep(0.02)


@dataclass
class Served:
    """A PNode serving on loopback, reached as the orchestrator (`stub`, `client`) and as the PNode that hosts
    every VNode (`peer`: the rightful sender of hops between VNodes)."""

    stub: node_pb2_grpc.VNodeServiceStub
    client: GrpcPNodeClient
    address: str
    reports: Reports
    peer: node_pb2_grpc.VNodeServiceStub
    orchestrator: Identity


@pytest.fixture()
def pnode(tmp_path: Path) -> Iterator[Served]:
    ca = CertificateAuthority.load_or_create(tmp_path)
    pid, identity = pnode_identity(ca)
    orchestrator = orchestrator_identity(ca, tmp_path)
    reports = Reports()
    hops = GrpcHopTransport(pnode_channels(identity, LIMIT))
    runtime = PNodeRuntime(pid, hops, reports)  # type: ignore[arg-type]  # only `report` is used
    runtime.start()
    server, port = serve_pnode(runtime, identity, "127.0.0.1:0", threads=2, max_message_bytes=LIMIT)
    address = f"127.0.0.1:{port}"
    channel = to_pnode(address, orchestrator, options=[("grpc.max_send_message_length", 4 * LIMIT)])
    peer_channel = to_pnode(address, identity)  # as the PNode hosting every VNode: the sender of every inner hop
    client = GrpcPNodeClient(channel, timeout=30)
    client.place_network(Placement(**{**PLACEMENT.__dict__, "assignments": dict.fromkeys(SPEC.nodes, pid),
                                      "addresses": {pid: address}}))
    try:
        yield Served(node_pb2_grpc.VNodeServiceStub(channel), client, address, reports,
                     node_pb2_grpc.VNodeServiceStub(peer_channel), orchestrator)
    finally:
        channel.close()
        peer_channel.close()
        server.stop(grace=None)
        runtime.stop()
        hops.close()


def infer_run(run_id: str) -> Run:
    return Run("svc", run_id, 1, "infer", 1, 1.0, ("logits",), PLACEMENT.digest, PLACEMENT.version)


def test_a_run_over_the_wire_matches_the_local_executor(pnode: Served) -> None:
    """An inference run through PlaceNetwork, BeginRun and a hop over gRPC reports the executor's logits bit for
    bit."""
    client, address, reports = pnode.client, pnode.address, pnode.reports
    ids = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    want = dcnr.LocalExecutor(SPEC, seed=3).forward({"tokens": ids})["logits"]
    client.begin_run(infer_run("r1"))
    hops = GrpcHopTransport(pnode_channels(pnode.orchestrator, LIMIT))  # network inputs come from the orchestrator
    try:
        hops.send_now(address, Hop("svc", "r1", 0, "fwd", "embedder", 0, ids), timeout=10)
        reports.wait(lambda got: any(r.kind == "output" for r in got))
    finally:
        hops.close()
    (out,) = [r for r in reports.got if r.kind == "output"]
    assert out.vnode == "lm_head" and torch.equal(out.value, want)


def fwd(vnode: str, value: Any, slot: int = 0, run: str = "good", network: str = "svc") -> node_pb2.HopRequest:
    return node_pb2.HopRequest(network=network, run=run, vnode=vnode, slot=slot, value=codec.encode_value(value))


ALIEN = common_pb2.ProtocolVersion(major=PROTOCOL_VERSION[0] + 1)
BAD: list[tuple[str, Callable[[Served], Any], grpc.StatusCode, str]] = [
    ("other major version", lambda s: s.stub.BeginRun(node_pb2.BeginRunRequest(version=ALIEN)),
     grpc.StatusCode.FAILED_PRECONDITION, "incompatible protocol version"),
    ("no version", lambda s: s.stub.PlaceNetwork(node_pb2.PlaceNetworkRequest(network="svc")),
     grpc.StatusCode.FAILED_PRECONDITION, "incompatible protocol version 0.0.0"),
    ("digest", lambda s: s.stub.PlaceNetwork(node_pb2.PlaceNetworkRequest(
        version=codec.version_message(), network="svc", yaml=TEXT, digest="0" * 64)),
     grpc.StatusCode.INVALID_ARGUMENT, "does not match its digest"),
    ("short tensor", lambda s: s.stub.ReceiveTrainRequest(node_pb2.HopRequest(
        network="svc", run="good", vnode="embedder", value=common_pb2.Value(tensor=common_pb2.Tensor(
            dtype="int64", shape=[1, 6], data=b"\0" * 47)))), grpc.StatusCode.INVALID_ARGUMENT, "needs 48"),
    ("dtype", lambda s: s.stub.ReceiveTrainRequest(node_pb2.HopRequest(
        network="svc", run="good", vnode="embedder", value=common_pb2.Value(tensor=common_pb2.Tensor(
            dtype="complex32", shape=[1])))), grpc.StatusCode.INVALID_ARGUMENT, "unknown dtype 'complex32'"),
    ("vnode", lambda s: s.stub.ReceiveTrainRequest(fwd("nope", torch.zeros(1))), grpc.StatusCode.NOT_FOUND,
     "has no VNode 'nope'"),
    ("network", lambda s: s.stub.ReceiveTrainRequest(fwd("embedder", torch.zeros(1), network="other")),
     grpc.StatusCode.NOT_FOUND, "network 'other' is not placed"),
    ("run", lambda s: s.stub.ReceiveTrainRequest(fwd("embedder", torch.zeros(1), run="never")),
     grpc.StatusCode.NOT_FOUND, "run 'never'"),
    ("slot", lambda s: s.stub.ReceiveTrainRequest(fwd("b0_add1", torch.zeros(1, 6, 8), slot=7)),
     grpc.StatusCode.INVALID_ARGUMENT, "input slot"),
    ("gradient of an inference run", lambda s: s.peer.ReceiveTrainResponse(node_pb2.GradientHop(
        network="svc", run="good", vnode="embedder", edge=0)), grpc.StatusCode.INVALID_ARGUMENT,
     "gradients belong to training runs"),
    ("size", lambda s: s.stub.ReceiveTrainRequest(fwd("b0_ln1", torch.zeros(LIMIT // 4 + 16))),
     grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ("stale placement", lambda s: s.stub.BeginRun(node_pb2.BeginRunRequest(
        version=codec.version_message(), run=common_pb2.Run(network="svc", id="x", kind="infer", micro_batches=1,
                                                            digest=PLACEMENT.digest, placement_version=0))),
     grpc.StatusCode.FAILED_PRECONDITION, "placement 0"),
    ("save elsewhere", lambda s: s.stub.Save(node_pb2.SaveRequest(network="svc", vnode="nope")),
     grpc.StatusCode.NOT_FOUND, "no VNode 'nope'"),
    ("empty but huge", lambda s: s.stub.ReceiveTrainRequest(node_pb2.HopRequest(
        network="svc", run="good", vnode="b0_ln1", value=common_pb2.Value(tensor=common_pb2.Tensor(
            dtype="float32", shape=[0, 60000, 60000])))), grpc.StatusCode.INVALID_ARGUMENT, "too large"),
    ("value shape", lambda s: s.peer.ReceiveTrainRequest(fwd("b0_ln1", torch.zeros(1, 6, 9))),
     grpc.StatusCode.INVALID_ARGUMENT, "network 'svc', VNode 'b0_ln1', input slot 0: expected floats of shape "
     "[batch, ≤6, 8], got float32 of shape [1, 6, 9]"),
    ("micro-batches", lambda s: s.stub.BeginRun(node_pb2.BeginRunRequest(
        version=codec.version_message(), run=common_pb2.Run(network="svc", id="x", kind="infer",
                                                            micro_batches=2**32 - 1, digest=PLACEMENT.digest,
                                                            placement_version=PLACEMENT.version))),
     grpc.StatusCode.INVALID_ARGUMENT, "1 to 1024 micro-batches, got 4294967295"),
]


@pytest.mark.parametrize("name, call, code, text", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(
        pnode: Served, name: str, call: Callable[[Served], Any], code: grpc.StatusCode, text: str) -> None:
    stub, client, reports = pnode.stub, pnode.client, pnode.reports
    client.begin_run(infer_run("good"))
    with pytest.raises(grpc.RpcError) as info:
        call(pnode)
    assert info.value.code() == code
    assert text in (info.value.details() or "")
    health = stub.Health(common_pb2.HealthRequest(), timeout=10)
    assert health.status == "serving" and health.version.major == PROTOCOL_VERSION[0]
    ack = stub.ReceiveTrainRequest(fwd("embedder", torch.zeros(1, 6, dtype=torch.long)), timeout=10)
    assert ack.accepted
    reports.wait(lambda got: any(r.kind == "output" for r in got))


def test_a_value_a_node_rejects_fails_the_run_with_a_report(pnode: Served) -> None:
    stub, client, reports = pnode.stub, pnode.client, pnode.reports
    client.begin_run(infer_run("bad-ids"))
    stub.ReceiveTrainRequest(fwd("embedder", torch.full((1, 6), 99, dtype=torch.long), run="bad-ids"), timeout=10)
    reports.wait(lambda got: any(r.kind == "failed" for r in got))
    (failed,) = [r for r in reports.got if r.kind == "failed"]
    assert failed.run == "bad-ids" and "token id out of range" in failed.error


def test_placement_survives_the_wire_unchanged() -> None:
    placement = Placement("svc", TEXT, 3, network_digest(TEXT), 9, 4, {"a": "p1"}, {"p1": "h:1"}, {"v": "{}"})
    assert placement_from_pb(node_pb2.PlaceNetworkRequest.FromString(
        placement_to_pb(placement).SerializeToString())) == placement


def test_tied_vnodes_are_built_together_and_listed() -> None:
    host = VNodeHost()
    host.add_network(SPEC)
    lm_head = host.vnode("svc", "lm_head")
    assert {v.id for _, v in host.local()} == {"embedder", "lm_head"}
    assert lm_head.params["weight"] is host.vnode("svc", "embedder").params["weight"]
