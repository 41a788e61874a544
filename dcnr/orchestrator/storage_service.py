"""`StorageService`: short-lived, scoped access to checkpoint blobs for PNodes.

Owns the tokens and pre-signed URLs that let a PNode write or read one blob, for a
few minutes, without ever holding a storage credential: S3-compatible stores get
pre-signed URLs; local storage gets an HMAC token for streaming the blob through
the orchestrator. Bytes that do not hash to their blob's name are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterator

import grpc

from dcnr.proto.v2 import storage_pb2, storage_pb2_grpc
from dcnr.storage import BlobStore, IntegrityError, S3Store

TOKEN_TTL = 300.0  # seconds a target stays usable
CHUNK = 1 << 20
MAX_BLOB = 8 * 2**30


class TokenSigner:
    """HMAC tokens naming an operation, a blob and an expiry; the key lives only in this process."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or os.urandom(32)

    def sign(self, op: str, digest: str, expires: float) -> str:
        mac = hmac.new(self.key, f"{op}:{digest}:{expires:.0f}".encode(), hashlib.sha256).hexdigest()
        return f"{expires:.0f}.{mac}"

    def check(self, op: str, digest: str, token: str) -> bool:
        expires, _, _ = token.partition(".")
        if not expires.isdigit() or float(expires) < time.time():
            return False
        return hmac.compare_digest(token, self.sign(op, digest, float(expires)))


def _digest(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"invalid blob name {value!r}: expected a sha256 hex digest")
    return value


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    def __init__(self, blobs: BlobStore, ttl: float = TOKEN_TTL) -> None:
        self.blobs = blobs
        self.ttl = ttl
        self.signer = TokenSigner()

    def _target(self, op: str, digest: str) -> storage_pb2.BlobTarget:
        expires = time.time() + self.ttl
        objects = self.blobs.objects
        if isinstance(objects, S3Store):
            key = f"blobs/{digest}"
            sign = objects.presigned_put if op == "put" else objects.presigned_get
            url = sign(key, int(self.ttl))
            return storage_pb2.BlobTarget(url=url, expires_at=expires)
        return storage_pb2.BlobTarget(token=self.signer.sign(op, digest, expires), expires_at=expires)

    def GetUploadTarget(self, request: storage_pb2.BlobTargetRequest,
                        context: grpc.ServicerContext) -> storage_pb2.BlobTarget:
        try:
            return self._target("put", _digest(request.digest))
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise AssertionError("unreachable: abort raises")

    def GetDownloadTarget(self, request: storage_pb2.BlobTargetRequest,
                          context: grpc.ServicerContext) -> storage_pb2.BlobTarget:
        try:
            digest = _digest(request.digest)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not self.blobs.objects.exists(f"blobs/{digest}"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no blob {digest[:12]}… in storage")
        return self._target("get", digest)

    def PutBlob(self, request_iterator: Iterator[storage_pb2.BlobUpload],
                context: grpc.ServicerContext) -> storage_pb2.BlobAck:
        first = next(request_iterator, None)
        if first is None or not self.signer.check("put", first.digest, first.token):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "missing, expired or foreign upload token")
        assert first is not None
        parts, size = [first.data], len(first.data)
        for msg in request_iterator:
            size += len(msg.data)
            if size > MAX_BLOB:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"blob larger than {MAX_BLOB} bytes")
            parts.append(msg.data)
        data = b"".join(parts)
        if BlobStore.digest(data) != first.digest:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"blob bytes do not hash to {first.digest[:12]}…: refused")
        self.blobs.put_blob(data)
        return storage_pb2.BlobAck(digest=first.digest, size=len(data))

    def GetBlob(self, request: storage_pb2.BlobTargetRequest,
                context: grpc.ServicerContext) -> Iterator[storage_pb2.BlobData]:
        if not self.signer.check("get", request.digest, request.token):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "missing, expired or foreign download token")
        try:
            data = self.blobs.get_blob(request.digest)
        except FileNotFoundError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no blob {request.digest[:12]}… in storage")
        except IntegrityError as exc:
            context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
        for i in range(0, len(data), CHUNK):
            yield storage_pb2.BlobData(data=data[i:i + CHUNK])
