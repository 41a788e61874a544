"""A PNode's way to its orchestrator over gRPC: enrolment for a certificate (`enroll`, on the
orchestrator's public port), then `GrpcOrchestratorLink` over mutual TLS on its peer port:
membership on a channel of its own, progress reports, and checkpoint blobs through
StorageService (pre-signed URLs or tokens, never credentials)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from dcnr.errors import DataLoss, DcnrError, Unavailable, Unreachable
from dcnr.proto.v2 import node_pb2, node_pb2_grpc, storage_pb2, storage_pb2_grpc
from dcnr.security.pki import ORCHESTRATOR_TLS_NAME
from dcnr.storage import BlobStore, http_get, http_put
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.errors import from_rpc_error
from dcnr.transport.grpc.node_management import report_to_pb
from dcnr.transport.grpc.pnode import DEFAULT_MAX_MESSAGE_BYTES, channel_options
from dcnr.transport.grpc.security import ChannelPool, Identity, secure_channel
from dcnr.transport.messages import Membership, Report

CHUNK = 1 << 20
T = TypeVar("T")
REGISTER_TIMEOUT = 30.0  # seconds: registering includes the orchestrator's probe of the PNode's address


def until_reachable(attempt: Callable[[], T], deadline: float, stop: threading.Event, orchestrator: str,
                    who: str) -> T:
    """`attempt()` until the orchestrator answers: Unavailable is retried, backing off to 2 s, until `deadline`;
    another refusal, the deadline or `stop` end it with ConnectionError (naming `who` was refused)."""
    delay = 0.1
    while True:
        try:
            return attempt()
        except Unavailable as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(f"cannot reach the orchestrator at {orchestrator}: {exc}") from None
        except DcnrError as exc:
            raise ConnectionError(f"the orchestrator at {orchestrator} refused {who}: {exc}") from None
        if stop.wait(delay):
            raise ConnectionError("stopped before joining")
        delay = min(2.0, delay * 2)


def enroll(address: str, ca_pem: bytes, csr: bytes, timeout: float = 10.0, role: str = "", token: str = ""
           ) -> tuple[str, bytes, int]:
    """Ask the orchestrator at `address` (its public port, verified against `ca_pem`) for a certificate (a
    PNode's, or with an operator's `token` a relay's): returns (id, certificate PEM, the orchestrator's peer
    port)."""
    channel = secure_channel(address, ca_pem, ORCHESTRATOR_TLS_NAME, [], token=token)
    try:
        reply = node_pb2_grpc.NodeManagementServiceStub(channel).IssueCertificate(
            node_pb2.CertificateRequest(csr=csr, version=codec.version_message(), role=role), timeout=timeout)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None
    finally:
        channel.close()
    return reply.id, reply.certificate, int(reply.peer_port)


class GrpcOrchestratorLink:
    """A PNode's `OrchestratorLink` over mutual TLS to the orchestrator's peer port `address`."""

    def __init__(self, address: str, identity: Identity, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 timeout: float = 30.0, blob_timeout: float = 300.0) -> None:
        self.address = address
        ca = identity.creds.ca_pem
        self.channels = ChannelPool(ca, ORCHESTRATOR_TLS_NAME, channel_options(max_message_bytes), identity)
        # membership has a channel of its own: a heartbeat never waits behind a report or a blob transfer
        self.membership_channels = ChannelPool(ca, ORCHESTRATOR_TLS_NAME, [("grpc.use_local_subchannel_pool", 1)],
                                               identity)
        self.timeout = timeout
        self.blob_timeout = blob_timeout

    @property
    def members(self) -> node_pb2_grpc.NodeManagementServiceStub:
        return node_pb2_grpc.NodeManagementServiceStub(self.membership_channels.get(self.address))

    @property
    def nodes(self) -> node_pb2_grpc.NodeManagementServiceStub:
        return node_pb2_grpc.NodeManagementServiceStub(self.channels.get(self.address))

    @property
    def storage(self) -> storage_pb2_grpc.StorageServiceStub:
        return storage_pb2_grpc.StorageServiceStub(self.channels.get(self.address))

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def register(self, member: Membership) -> float:
        reply = self._call(self.members.RegisterPNode, node_pb2.RegisterPNodeRequest(
            id=member.id, version=codec.version_message(), address=member.address,
            hardware=codec.hardware_message(member.hardware), name=member.name), timeout=REGISTER_TIMEOUT)
        if reply.unreachable:
            raise Unreachable(reply.detail or f"the orchestrator cannot reach {member.address}")
        return reply.heartbeat_interval_ms / 1000.0 or 30.0

    def assign_relay(self, pnode: str, avoid: str = "") -> tuple[str, str]:
        reply = self._call(self.members.AssignRelay, node_pb2.AssignRelayRequest(id=pnode, avoid=avoid))
        return reply.relay, reply.address

    def heartbeat(self, pnode: str, load: float, memory_used: int, vnodes: Sequence[str], refused: int,
                  paused: bool = False, compute_seconds: float = 0.0) -> bytes:
        reply = self._call(self.members.HeartbeatPNode, node_pb2.HeartbeatRequest(
            id=pnode, load=load, memory_used_bytes=memory_used, vnodes=list(vnodes), refused_tasks=refused,
            paused=paused, compute_seconds=compute_seconds))
        return bytes(reply.certificate)

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
            digest=digest, network=network, vnode=vnode), self.blob_timeout)
        if target.stored:
            return digest
        if target.url:
            http_put(target.url, data, dict(target.headers), timeout=self.blob_timeout)
        else:
            self._call(self.storage.PutBlob, _upload(digest, target.token, memoryview(data)),
                       self.blob_timeout)
        return digest

    def get_blob(self, pnode: str, network: str, vnode: str, digest: str) -> bytes:
        target = self._call(self.storage.GetDownloadTarget, storage_pb2.BlobTargetRequest(
            digest=digest, network=network, vnode=vnode), self.blob_timeout)
        if target.url:
            data = http_get(target.url, timeout=self.blob_timeout)
        else:
            try:
                data = b"".join(chunk.data for chunk in self.storage.GetBlob(storage_pb2.BlobTargetRequest(
                    digest=digest, token=target.token), timeout=self.blob_timeout))
            except grpc.RpcError as exc:
                raise from_rpc_error(exc) from None
        if BlobStore.digest(data) != digest:
            raise DataLoss(f"blob {digest[:12]}… does not match its hash: refused")
        return data

    def close(self) -> None:
        self.channels.close()
        self.membership_channels.close()


def _upload(digest: str, token: str, data: memoryview) -> Iterator[storage_pb2.BlobUpload]:
    """The messages of a streamed upload, one chunk at a time: the first names the blob and carries the
    token."""
    yield storage_pb2.BlobUpload(digest=digest, token=token, data=bytes(data[:CHUNK]))
    for i in range(CHUNK, len(data), CHUNK):
        yield storage_pb2.BlobUpload(data=bytes(data[i:i + CHUNK]))


class GrpcRelayMembership:
    """A relay's membership at the orchestrator (its peer port `address`, mutual TLS)."""

    def __init__(self, address: str, identity: Identity, timeout: float = 30.0) -> None:
        self.address = address
        self.channels = ChannelPool(identity.creds.ca_pem, ORCHESTRATOR_TLS_NAME, [], identity)
        self.timeout = timeout

    def _call(self, name: str, request: Any) -> Any:
        method = getattr(node_pb2_grpc.NodeManagementServiceStub(self.channels.get(self.address)), name)
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def register(self, relay: str, address: str) -> float:
        """Join as a relay serving at `address`; returns the heartbeat interval in seconds."""
        reply = self._call("RegisterRelay", node_pb2.RegisterRelayRequest(id=relay, version=codec.version_message(),
                                                                          address=address))
        return reply.heartbeat_interval_ms / 1000.0 or 30.0

    def heartbeat(self, relay: str, attached: int, bytes_forwarded: int, hop_bytes: int) -> bytes:
        """A renewed certificate when the current one is past half its life, else empty bytes; `NotFound` when
        the orchestrator does not know this relay (register again)."""
        reply = self._call("HeartbeatRelay", node_pb2.RelayHeartbeat(id=relay, attached=attached,
                                                                     bytes_forwarded=bytes_forwarded,
                                                                     hop_bytes=hop_bytes))
        return bytes(reply.certificate)

    def close(self) -> None:
        self.channels.close()
