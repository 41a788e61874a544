"""`NodeManagementService` over gRPC: PNodes enrolling, joining, heartbeating, leaving and reporting progress,
mapped to the orchestrator's `MembershipService` (its fleet and inbox), and the progress reports'
conversion both ways.

Errors are not handled here: the server wraps this servicer once with `guarded`.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import grpc

from dcnr.errors import InvalidArgument, PermissionDenied
from dcnr.proto.v2 import node_pb2, node_pb2_grpc
from dcnr.security import pki
from dcnr.security.authorization import OPERATOR, PNODE, RELAY
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.security import current_caller
from dcnr.transport.interfaces import MembershipService
from dcnr.transport.messages import Membership, Report

REPORT_KINDS: dict[Any, Any] = {"output": node_pb2.ProgressEvent.OUTPUT, "failed": node_pb2.ProgressEvent.FAILED,
                                 "done": node_pb2.ProgressEvent.MICRO_BATCH_DONE}
REPORT_NAMES: dict[Any, Any] = {v: k for k, v in REPORT_KINDS.items()}


def report_to_pb(r: Report) -> node_pb2.ProgressEvent:
    ev = node_pb2.ProgressEvent(kind=REPORT_KINDS[r.kind], network=r.network, run=r.run,
                                micro_batch=r.micro_batch, vnode=r.vnode, slot=r.slot, error=r.error)
    if r.value is not None:
        ev.value.CopyFrom(codec.encode_value(r.value))
    return ev


def report_from_pb(ev: node_pb2.ProgressEvent) -> Report:
    kind = REPORT_NAMES.get(ev.kind)
    if kind is None:
        raise codec.CodecError(f"unknown progress event kind {ev.kind}")
    value = codec.decode_value(ev.value) if ev.HasField("value") else None
    return Report(kind, ev.network, ev.run, int(ev.micro_batch), ev.vnode, int(ev.slot), value, ev.error)


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string ("ipv4:1.2.3.4:5", "ipv6:[::1]:5", "unix:..."), without the port."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[")
    return rest.rpartition(":")[0] if kind == "ipv4" else rest


class NodeManagementServicer(node_pb2_grpc.NodeManagementServiceServicer):
    """Served behind `secured`: enrolment is open to anyone; every other call comes from a PNode
    certificate and may only concern that PNode (an operator may also unregister any PNode)."""

    def __init__(self, members: MembershipService, peer_port: int = 0) -> None:
        self.members = members
        self.peer_port = peer_port  # the orchestrator's mutual-TLS port, told to PNodes that enrol

    @staticmethod
    def _own(pnode: str) -> str:
        """`pnode` if it is the calling PNode's id (PermissionDenied otherwise)."""
        caller = current_caller()
        if caller.role != PNODE or pnode != caller.name:
            raise PermissionDenied(f"{caller} may not act for PNode {pnode!r}")
        return pnode

    def IssueCertificate(self, request: node_pb2.CertificateRequest,
                         context: grpc.ServicerContext) -> node_pb2.CertificateResponse:
        codec.check_version(request.version)
        role = request.role or pki.PNODE
        if role not in (pki.PNODE, pki.RELAY):
            raise InvalidArgument(f"no certificates for role {role!r}: pnode or relay")
        if role == pki.RELAY and current_caller().role != OPERATOR:
            raise PermissionDenied("a relay's certificate needs an operator's token (relays carry other PNodes' "
                                   "traffic: `dcnr relay --token ...`)")
        pnode, certificate = self.members.enroll(request.csr, role)
        return node_pb2.CertificateResponse(id=pnode, certificate=certificate, peer_port=self.peer_port)

    def RegisterPNode(self, request: node_pb2.RegisterPNodeRequest,
                      context: grpc.ServicerContext) -> node_pb2.RegisterPNodeResponse:
        codec.check_version(request.version)
        v = request.version
        hardware = codec.hardware_record(request.hardware)
        # taken from the connection, never from what the PNode says: its key (hop signatures are checked with
        # it) and the host it connects from (a verifier never shares it with the PNode it checks)
        hardware["public_key"] = pki.public_key_der(current_caller().certificate).hex()
        hardware["peer_host"] = peer_host(context.peer())
        member = Membership(self._own(request.id), request.address, hardware, f"{v.major}.{v.minor}.{v.patch}",
                            request.name)
        problem = self.members.probe(member)
        if problem:  # an answer, not a failure: the PNode joins through a relay instead
            return node_pb2.RegisterPNodeResponse(version=codec.version_message(), unreachable=True, detail=problem)
        self.members.register(member)
        return node_pb2.RegisterPNodeResponse(heartbeat_interval_ms=int(self.members.heartbeat_interval * 1000),
                                              version=codec.version_message())

    def AssignRelay(self, request: node_pb2.AssignRelayRequest,
                    context: grpc.ServicerContext) -> node_pb2.AssignRelayResponse:
        relay, address = self.members.assign_relay(self._own(request.id), request.avoid)
        return node_pb2.AssignRelayResponse(relay=relay, address=address)

    def RegisterRelay(self, request: node_pb2.RegisterRelayRequest,
                      context: grpc.ServicerContext) -> node_pb2.RegisterPNodeResponse:
        codec.check_version(request.version)
        self.members.register_relay(self._own_relay(request.id), request.address)
        return node_pb2.RegisterPNodeResponse(heartbeat_interval_ms=int(self.members.heartbeat_interval * 1000),
                                              version=codec.version_message())

    def HeartbeatRelay(self, request: node_pb2.RelayHeartbeat,
                       context: grpc.ServicerContext) -> node_pb2.HeartbeatResponse:
        renewed = self.members.heartbeat_relay(self._own_relay(request.id), int(request.attached),
                                               int(request.bytes_forwarded), int(request.hop_bytes),
                                               current_caller().certificate)
        return node_pb2.HeartbeatResponse(known=True, certificate=renewed)

    @staticmethod
    def _own_relay(relay: str) -> str:
        caller = current_caller()
        if caller.role != RELAY or relay != caller.name:
            raise PermissionDenied(f"{caller} may not act for relay {relay!r}")
        return relay

    def UnregisterPNode(self, request: node_pb2.PNodeRef,
                        context: grpc.ServicerContext) -> node_pb2.UnregisterPNodeResponse:
        pnode = request.id if current_caller().role == OPERATOR else self._own(request.id)
        return node_pb2.UnregisterPNodeResponse(removed=self.members.unregister(pnode))

    def HeartbeatPNode(self, request: node_pb2.HeartbeatRequest,
                       context: grpc.ServicerContext) -> node_pb2.HeartbeatResponse:
        renewed = self.members.heartbeat(self._own(request.id), request.load, current_caller().certificate,
                                         request.paused, request.compute_seconds)
        return node_pb2.HeartbeatResponse(known=True, certificate=renewed)

    def ReportProgress(self, request: node_pb2.ProgressReport,
                       context: grpc.ServicerContext) -> node_pb2.ProgressAck:
        codec.check_version(request.version)
        self.members.deliver(self._own(request.pnode), [report_from_pb(ev) for ev in request.events])
        return node_pb2.ProgressAck(known=True)
