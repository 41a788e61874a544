"""A PNode's access to checkpoint blobs: through targets the orchestrator hands out, never credentials."""

from __future__ import annotations

import grpc

from dcnr.proto.v1 import storage_pb2, storage_pb2_grpc
from dcnr.storage import BlobStore, IntegrityError, http_get, http_put

CHUNK = 1 << 20


class BlobClient:
    def __init__(self, channel: grpc.Channel, pnode_id: str, timeout: float = 300.0) -> None:
        self.stub = storage_pb2_grpc.StorageServiceStub(channel)
        self.pnode_id = pnode_id
        self.timeout = timeout

    def put(self, data: bytes) -> str:
        """Store bytes as a blob; returns its sha256."""
        digest = BlobStore.digest(data)
        target = self.stub.GetUploadTarget(storage_pb2.BlobTargetRequest(digest=digest, pnode=self.pnode_id),
                                           timeout=self.timeout)
        if target.url:
            http_put(target.url, data, timeout=self.timeout)
        else:
            pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
            msgs = [storage_pb2.BlobUpload(digest=digest, token=target.token, data=pieces[0])]
            msgs += [storage_pb2.BlobUpload(data=p) for p in pieces[1:]]
            self.stub.PutBlob(iter(msgs), timeout=self.timeout)
        return digest

    def get(self, digest: str) -> bytes:
        """A blob's bytes, checked against its name."""
        target = self.stub.GetDownloadTarget(storage_pb2.BlobTargetRequest(digest=digest, pnode=self.pnode_id),
                                             timeout=self.timeout)
        if target.url:
            data = http_get(target.url, timeout=self.timeout)
        else:
            data = b"".join(chunk.data for chunk in self.stub.GetBlob(storage_pb2.BlobTargetRequest(
                digest=digest, pnode=self.pnode_id, token=target.token), timeout=self.timeout))
        if BlobStore.digest(data) != digest:
            raise IntegrityError(f"blob {digest[:12]}… does not match its hash: refused")
        return data
