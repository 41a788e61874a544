"""One authorization table for every RPC: each role is refused exactly what the table does not grant it.

The table is walked against the services the protos define (an RPC added without a rule fails here), then
every RPC of every service is called, over TLS, as every role: on an orchestrator with public reads on and
off, and on a PNode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass
from tls_helpers import orchestrator_identity, pnode_identity, to_orchestrator, to_pnode

from dcnr.orchestrator.app import Orchestrator
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.proto.v2 import node_pb2, orchestrator_pb2, storage_pb2
from dcnr.security.authorization import (
    ANONYMOUS,
    OPERATOR,
    ORCHESTRATOR,
    PNODE,
    RESEARCHER,
    RULES,
    Caller,
    allowed,
)
from dcnr.security.config import ClientConfig
from dcnr.security.pki import CertificateAuthority
from dcnr.transport.grpc.pnode import GrpcHopTransport, pnode_channels, serve_pnode

TIMEOUT = 20
PROTOS: tuple[ModuleType, ...] = (orchestrator_pb2, node_pb2, storage_pb2)
ORCHESTRATOR_SERVICES = ("OrchestratorService", "NodeManagementService", "StorageService")
PNODE_SERVICES = ("VNodeService", "PNodeService")
RELAY_SERVICES = ("RelayService",)
REFUSALS = ("is not allowed for role", "needs a credential")


def methods(services: tuple[str, ...]) -> list[Any]:
    return [m for proto in PROTOS for s in proto.DESCRIPTOR.services_by_name.values() if s.name in services
            for m in s.methods]


def full_name(method: Any) -> str:
    return f"{method.containing_service.full_name}/{method.name}"


def test_every_rpc_of_every_service_has_exactly_one_rule() -> None:
    defined = {full_name(m) for m in methods(ORCHESTRATOR_SERVICES + PNODE_SERVICES + RELAY_SERVICES)}
    assert defined - set(RULES) == set(), "an RPC without a rule: nobody may call it until the table says who"
    assert set(RULES) - defined == set(), "a rule for an RPC that does not exist"


def test_the_table_grants_what_the_roles_promise() -> None:
    def may(role: str, rpc: str, public: bool = True) -> bool:
        return allowed(f"dcnr.v2.{rpc}", Caller(role), public)

    assert all(may(OPERATOR, f"OrchestratorService/{m.name}") for m in methods(("OrchestratorService",)))
    assert may(RESEARCHER, "OrchestratorService/TrainNetwork")
    assert not may(RESEARCHER, "OrchestratorService/CreateToken")
    assert may(ANONYMOUS, "OrchestratorService/ListNetworks") and not may(ANONYMOUS, "OrchestratorService/ListNetworks",
                                                                        public=False)
    assert may(ANONYMOUS, "OrchestratorService/Health", public=False)
    assert may(ANONYMOUS, "NodeManagementService/IssueCertificate") and not may(ANONYMOUS,
                                                                               "NodeManagementService/RegisterPNode")
    for rpc in ("DeleteNetwork", "UpdateNetwork", "TrainNetwork", "ExportNetwork"):  # what an outsider tried
        assert not may(ANONYMOUS, f"OrchestratorService/{rpc}") and not may(PNODE, f"OrchestratorService/{rpc}")
    for rpc in ("Load", "ApplyUpdate", "ResetToStep", "Save", "PlaceNetwork", "BeginRun"):
        assert may(ORCHESTRATOR, f"VNodeService/{rpc}") and not may(PNODE, f"VNodeService/{rpc}")
    assert not may(PNODE, "PNodeService/DropLocalVNode")
    for rpc in ("TrustPNode", "ReleasePNode"):  # the standing of PNodes: operators only
        assert not any(may(role, f"OrchestratorService/{rpc}") for role in (RESEARCHER, PNODE, ANONYMOUS))
    assert may(RESEARCHER, "OrchestratorService/ListValidationEvents")
    assert may(ANONYMOUS, "OrchestratorService/ListValidationEvents")
    assert not may(ANONYMOUS, "OrchestratorService/ListValidationEvents", public=False)


def invoke(channel: grpc.Channel, method: Any) -> tuple[grpc.StatusCode, str]:
    """Call one RPC with an empty request (no messages for a streamed request); its status and details."""
    path = f"/{full_name(method)}"
    request = GetMessageClass(method.input_type)()
    try:
        if method.client_streaming:
            channel.stream_unary(path, request_serializer=type(request).SerializeToString)(iter(()), timeout=TIMEOUT)
        elif method.server_streaming:
            list(channel.unary_stream(path, request_serializer=type(request).SerializeToString)(request,
                                                                                              timeout=TIMEOUT))
        else:
            channel.unary_unary(path, request_serializer=type(request).SerializeToString)(request, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def check_every_rpc(channel: grpc.Channel, services: tuple[str, ...], caller: Caller, public: bool) -> int:
    """Every RPC of `services` as `caller`: refused by the table exactly when the table says so; returns how
    many were allowed."""
    granted = 0
    for method in methods(services):
        code, details = invoke(channel, method)
        refused = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) and any(
            r in details for r in REFUSALS)
        expected = allowed(full_name(method), caller, public)
        assert refused != expected, f"{caller.role} {full_name(method)}: {code.name} {details}"
        if not expected:
            want = grpc.StatusCode.UNAUTHENTICATED if caller.role == ANONYMOUS else grpc.StatusCode.PERMISSION_DENIED
            assert code == want, f"{caller.role} {full_name(method)}: {code.name} {details}"
        granted += expected
    return granted


@pytest.fixture(params=[True, False], ids=["public-reads", "private"])
def orch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Orchestrator]:
    o = Orchestrator(tmp_path / "state", public_reads=request.param)
    o.start("127.0.0.1:0")
    yield o
    o.stop(grace=0.5)


def test_every_role_on_the_orchestrator_gets_exactly_its_rules(orch: Orchestrator) -> None:
    public = f"127.0.0.1:{orch.port}"
    admin = ClientConfig.load(orch.admin_config).token
    researcher = orch.tokens.create("alice", "researcher")
    roles = [(Caller(OPERATOR), to_orchestrator(public, orch.ca.cert_pem, token=admin)),
             (Caller(RESEARCHER), to_orchestrator(public, orch.ca.cert_pem, token=researcher)),
             (Caller(ANONYMOUS), to_orchestrator(public, orch.ca.cert_pem))]
    pnode = to_orchestrator(f"127.0.0.1:{orch.peer_port}", orch.ca.cert_pem, pnode_identity(orch.ca)[1])
    try:
        granted = {c.role: check_every_rpc(ch, ("OrchestratorService", "NodeManagementService"), c, orch.public_reads)
                   for c, ch in roles}
        # the peer port serves PNodes only: membership and storage (elsewhere a certificate is not asked for)
        granted[PNODE] = check_every_rpc(pnode, ("NodeManagementService", "StorageService"), Caller(PNODE),
                                         orch.public_reads)
    finally:
        for _, ch in roles:
            ch.close()
        pnode.close()
    assert granted[OPERATOR] > granted[RESEARCHER] > granted[ANONYMOUS] >= 2  # health and enrolment at least
    assert granted[PNODE] == 10  # membership (with asking for a relay), reports, storage


def test_a_revoked_or_unknown_token_is_unauthenticated(orch: Orchestrator) -> None:
    public = f"127.0.0.1:{orch.port}"
    token = orch.tokens.create("bob", "researcher")
    get_network = next(m for m in methods(("OrchestratorService",)) if m.name == "GetNetwork")
    with to_orchestrator(public, orch.ca.cert_pem, token=token) as channel:
        assert invoke(channel, get_network)[0] == grpc.StatusCode.NOT_FOUND  # allowed: there is no network ''
        assert orch.tokens.revoke("bob")
        code, details = invoke(channel, get_network)
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked token")
    with to_orchestrator(public, orch.ca.cert_pem, token=token[:-2] + "xx") as channel:
        assert invoke(channel, get_network)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_every_role_on_a_pnode_gets_exactly_its_rules(tmp_path: Path) -> None:
    """Management calls only from the orchestrator, hops from PNodes; no certificate of our CA: no connection."""
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    pid, identity = pnode_identity(ca)
    hops = GrpcHopTransport(pnode_channels(identity, 2**20))
    runtime = PNodeRuntime(pid, hops)
    runtime.start()
    server, port = serve_pnode(runtime, identity)
    address = f"127.0.0.1:{port}"
    stranger_ca = CertificateAuthority.load_or_create(tmp_path / "other")
    try:
        with to_pnode(address, orchestrator_identity(ca, tmp_path / "ca")) as orchestrator, \
                to_pnode(address, pnode_identity(ca)[1]) as peer:
            assert check_every_rpc(orchestrator, PNODE_SERVICES, Caller(ORCHESTRATOR), True) == 14
            assert check_every_rpc(peer, PNODE_SERVICES, Caller(PNODE), True) == 3  # hops and health
        health = next(m for m in methods(("VNodeService",)) if m.name == "Health")
        with to_orchestrator(address, ca.cert_pem) as anonymous:  # TLS without a client certificate
            assert invoke(anonymous, health)[0] == grpc.StatusCode.UNAVAILABLE
        with to_pnode(address, pnode_identity(stranger_ca)[1]) as forged:  # a certificate of another CA
            assert invoke(forged, health)[0] == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)
        runtime.stop()
        hops.close()
