"""gRPC for PNode membership: `NodeManagementService` on the orchestrator, and the PNode's
`OrchestratorLink` (membership, progress reports, checkpoint blobs through StorageService).

A PNode of another major protocol version is refused with FAILED_PRECONDITION naming both
versions; a PNode of protocol 1 (package `dcnr.v1`) gets the same clear refusal from a
small handler kept for exactly that purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from dcnr.errors import DataLoss
from dcnr.proto.v2 import node_pb2, node_pb2_grpc, storage_pb2, storage_pb2_grpc
from dcnr.proto.version import VERSION_TEXT
from dcnr.storage import BlobStore, http_get, http_put
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.errors import from_rpc_error
from dcnr.transport.grpc.pnode import DEFAULT_MAX_MESSAGE_BYTES, channel_options
from dcnr.transport.interfaces import MembershipService
from dcnr.transport.messages import Membership, Report

CHUNK = 1 << 20
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


class NodeManagementServicer(node_pb2_grpc.NodeManagementServiceServicer):
    def __init__(self, members: MembershipService) -> None:
        self.members = members

    def RegisterPNode(self, request: node_pb2.RegisterPNodeRequest,
                      context: grpc.ServicerContext) -> node_pb2.RegisterPNodeResponse:
        codec.check_version(request.version)
        v, hw = request.version, request.hardware
        self.members.register(Membership(request.id, request.address, {
            "cpu_cores": hw.cpu_cores, "memory_bytes": hw.memory_bytes, "device": hw.device or "cpu",
            "memory_budget_bytes": hw.memory_budget_bytes, "threads": hw.threads}, f"{v.major}.{v.minor}.{v.patch}"))
        return node_pb2.RegisterPNodeResponse(heartbeat_interval_ms=int(self.members.heartbeat_interval * 1000),
                                              version=codec.version_message())

    def UnregisterPNode(self, request: node_pb2.PNodeRef,
                        context: grpc.ServicerContext) -> node_pb2.UnregisterPNodeResponse:
        return node_pb2.UnregisterPNodeResponse(removed=self.members.unregister(request.id))

    def HeartbeatPNode(self, request: node_pb2.HeartbeatRequest,
                       context: grpc.ServicerContext) -> node_pb2.HeartbeatResponse:
        self.members.heartbeat(request.id, request.load)
        return node_pb2.HeartbeatResponse(known=True)

    def ReportProgress(self, request: node_pb2.ProgressReport,
                       context: grpc.ServicerContext) -> node_pb2.ProgressAck:
        codec.check_version(request.version)
        self.members.deliver(request.pnode, [report_from_pb(ev) for ev in request.events])
        return node_pb2.ProgressAck(known=True)


def _refuse_v1(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                  f"incompatible protocol version 1: this orchestrator speaks {VERSION_TEXT} (major versions must "
                  "match; upgrade the PNode)")
    raise AssertionError("unreachable: abort raises")


def protocol_v1_refusal() -> grpc.GenericRpcHandler:
    """Answers a protocol-1 PNode's registration with a clear refusal instead of UNIMPLEMENTED."""
    return grpc.method_handlers_generic_handler("dcnr.v1.NodeManagementService", {
        "RegisterPNode": grpc.unary_unary_rpc_method_handler(_refuse_v1)})


class GrpcOrchestratorLink:
    """A PNode's `OrchestratorLink` over gRPC."""

    def __init__(self, address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, timeout: float = 30.0,
                 blob_timeout: float = 300.0, channel: grpc.Channel | None = None) -> None:
        """`channel`: use this one for everything instead of opening two to `address`."""
        self.channel = channel or grpc.insecure_channel(address, options=channel_options(max_message_bytes))
        # membership has a channel of its own: a heartbeat never waits behind a report or a blob transfer
        self.membership_channel = channel or grpc.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)])
        self.members = node_pb2_grpc.NodeManagementServiceStub(self.membership_channel)
        self.nodes = node_pb2_grpc.NodeManagementServiceStub(self.channel)
        self.storage = storage_pb2_grpc.StorageServiceStub(self.channel)
        self.timeout = timeout
        self.blob_timeout = blob_timeout

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def register(self, member: Membership) -> float:
        hw = member.hardware
        reply = self._call(self.members.RegisterPNode, node_pb2.RegisterPNodeRequest(
            id=member.id, version=codec.version_message(), address=member.address, hardware=node_pb2.Hardware(
                cpu_cores=hw.get("cpu_cores", 0), memory_bytes=hw.get("memory_bytes", 0),
                device=hw.get("device", "cpu"), memory_budget_bytes=hw.get("memory_budget_bytes", 0),
                threads=hw.get("threads", 0))), timeout=10.0)
        return reply.heartbeat_interval_ms / 1000.0 or 30.0

    def heartbeat(self, pnode: str, load: float, memory_used: int, vnodes: Sequence[str], refused: int) -> None:
        self._call(self.members.HeartbeatPNode, node_pb2.HeartbeatRequest(
            id=pnode, load=load, memory_used_bytes=memory_used, vnodes=list(vnodes), refused_tasks=refused))

    def unregister(self, pnode: str) -> None:
        self._call(self.members.UnregisterPNode, node_pb2.PNodeRef(id=pnode), timeout=5.0)

    def report(self, pnode: str, reports: Sequence[Report]) -> None:
        self._call(self.nodes.ReportProgress, node_pb2.ProgressReport(
            version=codec.version_message(), pnode=pnode, events=[report_to_pb(r) for r in reports]))

    def put_blob(self, pnode: str, data: bytes) -> str:
        digest = BlobStore.digest(data)
        target = self._call(self.storage.GetUploadTarget, storage_pb2.BlobTargetRequest(digest=digest, pnode=pnode),
                            self.blob_timeout)
        if target.url:
            http_put(target.url, data, timeout=self.blob_timeout)
        else:
            pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
            msgs = [storage_pb2.BlobUpload(digest=digest, token=target.token, data=pieces[0])]
            msgs += [storage_pb2.BlobUpload(data=p) for p in pieces[1:]]
            self._call(self.storage.PutBlob, iter(msgs), self.blob_timeout)
        return digest

    def get_blob(self, pnode: str, digest: str) -> bytes:
        target = self._call(self.storage.GetDownloadTarget,
                            storage_pb2.BlobTargetRequest(digest=digest, pnode=pnode), self.blob_timeout)
        if target.url:
            data = http_get(target.url, timeout=self.blob_timeout)
        else:
            try:
                data = b"".join(chunk.data for chunk in self.storage.GetBlob(storage_pb2.BlobTargetRequest(
                    digest=digest, pnode=pnode, token=target.token), timeout=self.blob_timeout))
            except grpc.RpcError as exc:
                raise from_rpc_error(exc) from None
        if BlobStore.digest(data) != digest:
            raise DataLoss(f"blob {digest[:12]}… does not match its hash: refused")
        return data

    def close(self) -> None:
        self.channel.close()
        self.membership_channel.close()
