"""Short-lived, scoped access to checkpoint blobs for PNodes.

Owns the tokens and pre-signed URLs that let a PNode write or read one blob, for a
few minutes, without ever holding a storage credential: S3-compatible stores get
pre-signed URLs; local storage gets an HMAC token for streaming the blob through
the orchestrator. Bytes that do not hash to their blob's name are refused. Knows
nothing of gRPC: `dcnr.transport.grpc.storage_service` serves it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from dcnr.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from dcnr.storage import BlobStore, S3Store

TOKEN_TTL = 300.0  # seconds a target stays usable
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
        if not (expires.isascii() and expires.isdigit()) or float(expires) < time.time():
            return False
        return hmac.compare_digest(token.encode(), self.sign(op, digest, float(expires)).encode())


@dataclass(frozen=True)
class BlobTarget:
    """Where a PNode puts or gets one blob: a pre-signed URL, or a token for streaming it through us."""

    url: str
    token: str
    expires_at: float  # Unix time


def _digest(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise InvalidArgument(f"invalid blob name {value!r}: expected a sha256 hex digest")
    return value


class BlobAccess:
    def __init__(self, blobs: BlobStore, ttl: float = TOKEN_TTL) -> None:
        self.blobs = blobs
        self.ttl = ttl
        self.signer = TokenSigner()

    def _target(self, op: str, digest: str) -> BlobTarget:
        expires = time.time() + self.ttl
        objects = self.blobs.objects
        if isinstance(objects, S3Store):
            sign = objects.presigned_put if op == "put" else objects.presigned_get
            return BlobTarget(url=sign(f"blobs/{digest}", int(self.ttl)), token="", expires_at=expires)
        return BlobTarget(url="", token=self.signer.sign(op, digest, expires), expires_at=expires)

    def upload_target(self, digest: str) -> BlobTarget:
        return self._target("put", _digest(digest))

    def download_target(self, digest: str) -> BlobTarget:
        if not self.blobs.objects.exists(f"blobs/{_digest(digest)}"):
            raise NotFound(f"no blob {digest[:12]}… in storage")
        return self._target("get", digest)

    def put(self, digest: str, token: str, chunks: Iterable[bytes]) -> int:
        """Store the blob the chunks make up, if the upload token is valid and the bytes hash to `digest`;
        returns its size."""
        if not self.signer.check("put", digest, token):
            raise PermissionDenied("missing, expired or foreign upload token")
        parts: list[bytes] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_BLOB:
                raise ResourceExhausted(f"blob larger than {MAX_BLOB} bytes")
            parts.append(chunk)
        data = b"".join(parts)
        if BlobStore.digest(data) != digest:
            raise InvalidArgument(f"blob bytes do not hash to {digest[:12]}…: refused")
        self.blobs.put_blob(data)
        return len(data)

    def get(self, digest: str, token: str) -> bytes:
        """The blob's bytes, if the download token is valid (a blob failing its hash check is `DataLoss`)."""
        if not self.signer.check("get", digest, token):
            raise PermissionDenied("missing, expired or foreign download token")
        try:
            return self.blobs.get_blob(digest)
        except FileNotFoundError:
            raise NotFound(f"no blob {digest[:12]}… in storage") from None
