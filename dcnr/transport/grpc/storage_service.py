"""`StorageService` over gRPC: `dcnr.orchestrator.blob_access` in protobuf.

The caller is the PNode whose certificate the call presents (served behind `secured`, on the
orchestrator's mutual-TLS port).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc

from dcnr.orchestrator.blob_access import BlobAccess, BlobTarget
from dcnr.proto.v2 import storage_pb2, storage_pb2_grpc
from dcnr.transport.grpc.security import current_caller

CHUNK = 1 << 20  # bytes per streamed message


def _target(t: BlobTarget) -> storage_pb2.BlobTarget:
    return storage_pb2.BlobTarget(url=t.url, token=t.token, expires_at=t.expires_at, stored=t.stored,
                                  headers=t.headers)


def _caller() -> str:
    """The PNode making the call: its certificate's id."""
    return current_caller().name


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    def __init__(self, access: BlobAccess) -> None:
        self.access = access

    def GetUploadTarget(self, request: storage_pb2.BlobTargetRequest,
                        context: grpc.ServicerContext) -> storage_pb2.BlobTarget:
        return _target(self.access.upload_target(_caller(), request.network, request.vnode,
                                                 request.digest))

    def GetDownloadTarget(self, request: storage_pb2.BlobTargetRequest,
                          context: grpc.ServicerContext) -> storage_pb2.BlobTarget:
        return _target(self.access.download_target(_caller(), request.network, request.vnode,
                                                   request.digest))

    def PutBlob(self, request_iterator: Iterator[storage_pb2.BlobUpload],
                context: grpc.ServicerContext) -> storage_pb2.BlobAck:
        """The first message names the blob and carries the token; every message carries bytes."""
        first = next(request_iterator, None)
        if first is None:  # an empty upload: no token, so refused
            first = storage_pb2.BlobUpload()
        chunks = itertools.chain([first.data], (m.data for m in request_iterator))
        size = self.access.put(_caller(), first.digest, first.token, chunks)
        return storage_pb2.BlobAck(digest=first.digest, size=size)

    def GetBlob(self, request: storage_pb2.BlobTargetRequest,
                context: grpc.ServicerContext) -> Iterator[storage_pb2.BlobData]:
        data = self.access.get(_caller(), request.digest, request.token)
        for i in range(0, len(data), CHUNK):
            yield storage_pb2.BlobData(data=data[i:i + CHUNK])
