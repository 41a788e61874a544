"""Relays in one process: who may be a relay, whom a relay may speak for, how PNodes are spread over relays,
and a relayed call's round trip (reply, status, trailing metadata) through the real servicers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tls_helpers import pnode_identity, to_orchestrator

from dcnr.errors import PermissionDenied, Unauthenticated, Unavailable
from dcnr.orchestrator.app import Orchestrator
from dcnr.orchestrator.relays import BUILTIN, Relays
from dcnr.proto.v2 import common_pb2, node_pb2, node_pb2_grpc
from dcnr.proto.version import PROTOCOL_VERSION
from dcnr.security import pki
from dcnr.security.config import ClientConfig
from dcnr.transport.grpc.errors import PROBLEMS_KEY
from dcnr.transport.grpc.link import enroll
from dcnr.transport.grpc.relay import RelayLink, method_handlers
from dcnr.transport.grpc.security import ON_BEHALF_KEY, TO_KEY, Identity, caller_of, secure_channel

TIMEOUT = 30


@pytest.fixture()
def orch(tmp_path: Path) -> Iterator[Orchestrator]:
    o = Orchestrator(tmp_path / "state", heartbeat_interval=30.0)
    o.start("127.0.0.1:0")
    try:
        yield o
    finally:
        o.stop(grace=0.5)


def version() -> common_pb2.ProtocolVersion:
    major, minor, patch = PROTOCOL_VERSION
    return common_pb2.ProtocolVersion(major=major, minor=minor, patch=patch)


def relay_identity(orch: Orchestrator) -> tuple[str, Identity]:
    key = ec.generate_private_key(ec.SECP256R1())
    token = ClientConfig.load(orch.admin_config).token
    rid, cert, _ = enroll(f"127.0.0.1:{orch.port}", orch.ca.cert_pem, pki.certificate_request(key), role="relay",
                          token=token)
    return rid, Identity(pki.Credentials(pki.key_pem(key), cert, orch.ca.cert_pem))


def test_only_an_operator_gets_a_relay_certificate(orch: Orchestrator) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(PermissionDenied, match="operator"):
        enroll(f"127.0.0.1:{orch.port}", orch.ca.cert_pem, pki.certificate_request(key), role="relay")
    researcher = orch.tokens.create("alice", "researcher")
    with pytest.raises(PermissionDenied):
        enroll(f"127.0.0.1:{orch.port}", orch.ca.cert_pem, pki.certificate_request(key), role="relay",
               token=researcher)
    rid, identity = relay_identity(orch)
    assert rid.startswith("rl-") and pki.peer_of(identity.creds.cert_pem) == pki.Peer(pki.RELAY, rid)
    assert orch.ca.renew(identity.creds.cert_pem) != identity.creds.cert_pem  # relays renew like PNodes


def test_a_relay_acts_for_no_pnode_and_a_pnode_for_no_relay(orch: Orchestrator) -> None:
    rid, relay = relay_identity(orch)
    pid, pnode = pnode_identity(orch.ca)
    peer = f"127.0.0.1:{orch.peer_port}"
    with to_orchestrator(peer, orch.ca.cert_pem, relay) as as_relay, \
            to_orchestrator(peer, orch.ca.cert_pem, pnode) as as_pnode:
        relays = node_pb2_grpc.NodeManagementServiceStub(as_relay)
        pnodes = node_pb2_grpc.NodeManagementServiceStub(as_pnode)
        for call in (lambda: relays.RegisterPNode(node_pb2.RegisterPNodeRequest(id=rid, version=version(),
                                                                                address="127.0.0.1:1")),
                     lambda: relays.AssignRelay(node_pb2.AssignRelayRequest(id=rid)),
                     lambda: pnodes.RegisterRelay(node_pb2.RegisterRelayRequest(id=pid, version=version(),
                                                                                address="127.0.0.1:1")),
                     lambda: relays.RegisterRelay(node_pb2.RegisterRelayRequest(id="rl-other", version=version(),
                                                                                address="127.0.0.1:1"))):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        relays.RegisterRelay(node_pb2.RegisterRelayRequest(id=rid, version=version(), address="127.0.0.1:7"),
                             timeout=TIMEOUT)
        assert pnodes.AssignRelay(node_pb2.AssignRelayRequest(id=pid), timeout=TIMEOUT).relay == rid


class _Context:
    """What `caller_of` reads of a call."""

    def __init__(self, cert: bytes, metadata: tuple[tuple[str, Any], ...] = ()) -> None:
        self.cert, self.metadata = cert, metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.cert]}

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.metadata


def test_only_a_relay_speaks_for_a_pnode_and_only_where_relayed_calls_are_accepted(orch: Orchestrator,
                                                                                   tmp_path: Path) -> None:
    rid, relay = relay_identity(orch)
    pid, pnode = pnode_identity(orch.ca)
    other_id, other = pnode_identity(orch.ca)
    behalf = ((ON_BEHALF_KEY, pnode.creds.cert_pem),)
    ctx: Any = _Context(relay.creds.cert_pem, behalf)
    assert caller_of(ctx, None, relayed=True).name == pid
    assert caller_of(ctx, None, relayed=False).name == rid  # the orchestrator's ports accept no relayed calls
    ctx = _Context(other.creds.cert_pem, behalf)  # a PNode claiming to call for another: it is itself
    assert caller_of(ctx, None, relayed=True).name == other_id
    orchestrator_cert = orch.identity.creds.cert_pem
    ctx = _Context(relay.creds.cert_pem, ((ON_BEHALF_KEY, orchestrator_cert),))
    with pytest.raises(Unauthenticated, match="only call in the name of a PNode"):
        caller_of(ctx, None, relayed=True)


def test_pnodes_are_spread_over_alive_relays_and_fall_back_to_the_orchestrator() -> None:
    relays = Relays(heartbeat_interval=1.0, builtin=lambda: (7000, 0, 0, 0))
    assert relays.assign("p0").id == BUILTIN
    relays.register("rl-a", "10.0.0.1:5")
    relays.register("rl-b", "10.0.0.2:5")
    chosen = [relays.assign(f"p{i}").id for i in range(4)]
    assert sorted(chosen) == ["rl-a", "rl-a", "rl-b", "rl-b"]
    assert relays.assign("p0", avoid="rl-a").id == "rl-b"  # a relay that just failed p0 is avoided
    relays._relays["rl-a"].last_seen = time.time() - 10  # silent past its beats
    assert relays.sweep() == ["rl-a"]
    assert {relays.assign(f"q{i}").id for i in range(3)} == {"rl-b"}
    assert relays.records()[0].address == ":7000"


def test_a_relayed_call_comes_back_with_its_reply_status_and_trailing_metadata(orch: Orchestrator) -> None:
    """A stand-in PNode attaches to the orchestrator's relay; the orchestrator's calls reach its handlers with
    the orchestrator as caller, and a refusal keeps its status and trailing metadata."""
    pid, pnode = pnode_identity(orch.ca)
    seen: list[str] = []

    class Servicer(node_pb2_grpc.VNodeServiceServicer):
        def Health(self, request: Any, context: Any) -> common_pb2.HealthResponse:
            seen.append(pki.peer_of(context.auth_context()["x509_pem_cert"][0]).role)
            return common_pb2.HealthResponse(status="serving")

        def CheckFinite(self, request: Any, context: Any) -> node_pb2.CheckFiniteResponse:
            context.set_trailing_metadata(((PROBLEMS_KEY, "network"),))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such network")
            raise AssertionError("abort returns no more")

    handlers = method_handlers(lambda server: node_pb2_grpc.add_VNodeServiceServicer_to_server(Servicer(), server))
    link = RelayLink(f"127.0.0.1:{orch.relay_port}", pnode, handlers, 2**20)
    link.open(timeout=TIMEOUT)
    try:
        channel = secure_channel(f"127.0.0.1:{orch.relay_port}", orch.ca.cert_pem, pki.RELAY_TLS_NAME, [],
                                 orch.identity)
        stub = node_pb2_grpc.VNodeServiceStub(channel)
        reply = stub.Health(common_pb2.HealthRequest(), metadata=[(TO_KEY, pid)], timeout=TIMEOUT)
        assert reply.status == "serving" and seen == ["orchestrator"]
        with pytest.raises(grpc.RpcError) as info:
            stub.CheckFinite(node_pb2.NetworkStepRequest(network="x"), metadata=[(TO_KEY, pid)], timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "no such network"
        assert (PROBLEMS_KEY, "network") in tuple(info.value.trailing_metadata() or ())
        with pytest.raises(grpc.RpcError) as info:  # a PNode not attached: unavailable, after a bounded wait
            stub.Health(common_pb2.HealthRequest(), metadata=[(TO_KEY, "pn-nobody")], timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert orch.relay.bytes_forwarded > 0 and orch.relay.attached == 1
        channel.close()
    finally:
        link.close()
    deadline = time.monotonic() + TIMEOUT
    while orch.relay.attached and time.monotonic() < deadline:
        time.sleep(0.05)
    assert orch.relay.attached == 0  # the stream ended with the link


def test_a_pnode_sends_only_hops_up_its_stream(orch: Orchestrator) -> None:
    """Whatever else an attached PNode asks its relay to deliver is refused: a relay is no open proxy."""
    _, pnode = pnode_identity(orch.ca)
    link = RelayLink(f"127.0.0.1:{orch.relay_port}", pnode, {}, 2**20)
    link.open(timeout=TIMEOUT)
    try:
        refused = link.call_up(f"127.0.0.1:{orch.peer_port}", "/dcnr.v2.VNodeService/PlaceNetwork", b"", TIMEOUT)
        with pytest.raises(PermissionDenied, match="only hops"):
            refused.result(TIMEOUT)
        nobody = link.call_up("127.0.0.1:1", "/dcnr.v2.VNodeService/ReceiveTrainRequest", b"", TIMEOUT)
        with pytest.raises(Unavailable):  # a hop to nowhere fails as unreachable
            nobody.result(TIMEOUT)
    finally:
        link.close()
