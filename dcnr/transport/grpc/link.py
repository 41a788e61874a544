"""A PNode's `OrchestratorLink` over gRPC: membership on a channel of its own, progress reports, and
checkpoint blobs through StorageService (pre-signed URLs or tokens, never credentials)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from dcnr.errors import DataLoss
from dcnr.proto.v2 import node_pb2, node_pb2_grpc, storage_pb2, storage_pb2_grpc
from dcnr.storage import BlobStore, http_get, http_put
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.errors import from_rpc_error
from dcnr.transport.grpc.node_management import report_to_pb
from dcnr.transport.grpc.pnode import DEFAULT_MAX_MESSAGE_BYTES, channel_options
from dcnr.transport.messages import Membership, Report

CHUNK = 1 << 20


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
        reply = self._call(self.members.RegisterPNode, node_pb2.RegisterPNodeRequest(
            id=member.id, version=codec.version_message(), address=member.address,
            hardware=codec.hardware_message(member.hardware)), timeout=10.0)
        return reply.heartbeat_interval_ms / 1000.0 or 30.0

    def heartbeat(self, pnode: str, load: float, memory_used: int, vnodes: Sequence[str], refused: int) -> None:
        self._call(self.members.HeartbeatPNode, node_pb2.HeartbeatRequest(
            id=pnode, load=load, memory_used_bytes=memory_used, vnodes=list(vnodes), refused_tasks=refused))

    def unregister(self, pnode: str) -> None:
        self._call(self.members.UnregisterPNode, node_pb2.PNodeRef(id=pnode), timeout=5.0)

    def report(self, pnode: str, reports: Sequence[Report]) -> None:
        self._call(self.nodes.ReportProgress, node_pb2.ProgressReport(
            version=codec.version_message(), pnode=pnode, events=[report_to_pb(r) for r in reports]))

    def put_blob(self, pnode: str, network: str, vnode: str, data: bytes) -> str:
        """Nothing to send when the orchestrator has the blob already; a PUT to S3 with the headers its URL was
        signed with (an object that appeared meanwhile has these very bytes: it was refused unless they hash to
        its name); or streamed through the orchestrator."""
        digest = BlobStore.digest(data)
        target = self._call(self.storage.GetUploadTarget, storage_pb2.BlobTargetRequest(
            digest=digest, pnode=pnode, network=network, vnode=vnode), self.blob_timeout)
        if target.stored:
            return digest
        if target.url:
            http_put(target.url, data, dict(target.headers), timeout=self.blob_timeout)
        else:
            self._call(self.storage.PutBlob, _upload(pnode, digest, target.token, memoryview(data)),
                       self.blob_timeout)
        return digest

    def get_blob(self, pnode: str, network: str, vnode: str, digest: str) -> bytes:
        target = self._call(self.storage.GetDownloadTarget, storage_pb2.BlobTargetRequest(
            digest=digest, pnode=pnode, network=network, vnode=vnode), self.blob_timeout)
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


def _upload(pnode: str, digest: str, token: str, data: memoryview) -> Iterator[storage_pb2.BlobUpload]:
    """The messages of a streamed upload, one chunk at a time: the first names the blob, the sender and the
    token."""
    yield storage_pb2.BlobUpload(digest=digest, token=token, pnode=pnode, data=bytes(data[:CHUNK]))
    for i in range(CHUNK, len(data), CHUNK):
        yield storage_pb2.BlobUpload(data=bytes(data[i:i + CHUNK]))
