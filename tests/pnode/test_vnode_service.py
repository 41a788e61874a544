"""A PNode's gRPC VNodeService on loopback: real hops give the executor's answer; every kind of
bad request gets the right status and the server keeps serving."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
import torch
import yaml

import dcnr
from dcnr.pnode.host import VNodeHost
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.pnode.service import serve
from dcnr.transport.grpc import codec
from dcnr.proto.v2 import common_pb2, node_pb2, node_pb2_grpc
from dcnr.proto.version import PROTOCOL_VERSION
from dcnr.transport.grpc.codec import version_message
from dcnr.spec.transformer import transformer_lm

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def spec() -> dcnr.NetworkSpec:
    doc = transformer_lm("svc", blocks=1, heads=2, head_dim=4, dim=8, seq_len=6, vocab_size=30, dropout=0.0)
    return dcnr.parse_network(yaml.safe_dump(doc))


@pytest.fixture()
def stub(spec: dcnr.NetworkSpec) -> Iterator[node_pb2_grpc.VNodeServiceStub]:
    runtime = PNodeRuntime("p1")
    runtime.add_network(spec, seed=3)
    runtime.start()
    server, port = serve(runtime, "127.0.0.1:0", threads=2, max_message_bytes=LIMIT)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield node_pb2_grpc.VNodeServiceStub(channel)
    finally:
        channel.close()
        server.stop(grace=None)
        runtime.stop()


def hop(vnode: str, value: torch.Tensor, step: int = 1, slot: int = 0,
        version: common_pb2.ProtocolVersion | None = None, network: str = "svc") -> node_pb2.HopRequest:
    return node_pb2.HopRequest(version=version or version_message(), vnode=vnode, slot=slot,
                               request=common_pb2.RequestId(network=network, step=step, kind="infer"),
                               value=codec.encode_value(value))


def test_hops_through_the_service_match_the_local_executor(spec: dcnr.NetworkSpec,
                                                           stub: node_pb2_grpc.VNodeServiceStub) -> None:
    """Running the chain VNode by VNode over gRPC gives the executor's logits bit for bit."""
    ids = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    want = dcnr.LocalExecutor(spec, seed=3).forward({"tokens": ids})["logits"]
    values: dict[tuple[str, int], torch.Tensor] = {}
    for nid in spec.topo_order:
        if nid == "loss":
            continue
        ins = [(e.dst_slot, values[(e.src, e.src_slot)]) for e in spec.in_edges(nid)] or [(0, ids)]
        outputs = None
        for slot, value in sorted(ins, key=lambda sv: sv[0]):
            outputs = stub.Forward(hop(nid, value, slot=slot)).outputs
        assert outputs, f"{nid} did not fire"
        for s, out in enumerate(outputs):
            values[(nid, s)] = codec.decode_value(out)
    assert torch.equal(values[("lm_head", 0)], want)


@pytest.mark.parametrize("make, code, text", [
    (lambda: hop("embedder", torch.zeros(1, 6, dtype=torch.long),
                 version=common_pb2.ProtocolVersion(major=PROTOCOL_VERSION[0] + 1)),
     grpc.StatusCode.FAILED_PRECONDITION, "incompatible protocol version"),
    (lambda: node_pb2.HopRequest(version=version_message(), vnode="embedder",
                                 request=common_pb2.RequestId(network="svc"),
                                 value=common_pb2.Value(tensor=common_pb2.Tensor(dtype="int64", shape=[1, 6],
                                                                                 data=b"\0" * 47))),
     grpc.StatusCode.INVALID_ARGUMENT, "needs 48"),
    (lambda: node_pb2.HopRequest(version=version_message(), vnode="embedder",
                                 request=common_pb2.RequestId(network="svc"),
                                 value=common_pb2.Value(tensor=common_pb2.Tensor(dtype="complex32", shape=[1]))),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown dtype 'complex32'"),
    (lambda: hop("nope", torch.zeros(1)), grpc.StatusCode.NOT_FOUND, "has no VNode 'nope'"),
    (lambda: hop("embedder", torch.zeros(1), network="other"), grpc.StatusCode.NOT_FOUND, "unknown network 'other'"),
    (lambda: hop("embedder", torch.full((1, 6), 99, dtype=torch.long)), grpc.StatusCode.INVALID_ARGUMENT,
     "token id out of range"),
    (lambda: hop("b0_add1", torch.zeros(1, 6, 8), slot=7), grpc.StatusCode.INVALID_ARGUMENT, "input slot"),
    (lambda: hop("b0_ln1", torch.zeros(LIMIT // 4 + 16)), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
])
def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(
        stub: node_pb2_grpc.VNodeServiceStub, make: Callable[[], node_pb2.HopRequest], code: grpc.StatusCode,
        text: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Forward(make(), timeout=10)
    assert info.value.code() == code
    assert text in (info.value.details() or "")
    health = stub.Health(common_pb2.HealthRequest(), timeout=10)
    assert health.status == "serving" and health.version.major == PROTOCOL_VERSION[0]
    ok = stub.Forward(hop("embedder", torch.zeros(1, 6, dtype=torch.long), step=2), timeout=10)
    assert len(ok.outputs) == 1


def test_tied_vnodes_are_built_together_and_listed(spec: dcnr.NetworkSpec) -> None:
    host = VNodeHost()
    host.add_network(spec)
    lm_head = host.vnode("svc", "lm_head")
    assert {v.id for _, v in host.local()} == {"embedder", "lm_head"}
    assert lm_head.params["weight"] is host.vnode("svc", "embedder").params["weight"]
    assert host.drop("svc", "lm_head") and not host.drop("svc", "lm_head")
