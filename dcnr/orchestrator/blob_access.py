"""Short-lived, scoped access to checkpoint blobs for PNodes.

Owns the tokens and pre-signed URLs that let a PNode write or read one blob, for a
few minutes, without ever holding a storage credential: S3-compatible stores get
pre-signed URLs; local storage gets an HMAC token for streaming the blob through
the orchestrator. Bytes that do not hash to their blob's name are refused: a
pre-signed PUT carries the blob's SHA-256 for S3 to check and may not replace an
existing object; a streamed blob is written to a temporary file while hashed and
committed only when whole and true. A blob already stored is not written again (its
target says so). Knows nothing of gRPC: `dcnr.transport.grpc.storage_service` serves it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from dcnr.errors import InvalidArgument, NotFound, PermissionDenied
from dcnr.storage import BlobStore, S3Store

TOKEN_TTL = 300.0  # seconds a target stays usable
MAX_BLOB = 8 * 2**30  # bytes of the largest blob streamed through the orchestrator


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


@dataclass(frozen=True)
class BlobTarget:
    """Where a PNode puts or gets one blob: a pre-signed URL (sent with `headers`), or a token for streaming
    it through us; for an upload, `stored` instead when the blob is in storage already."""

    url: str
    token: str
    expires_at: float  # Unix time
    headers: dict[str, str] = field(default_factory=dict)  # a pre-signed request must send exactly these
    stored: bool = False


def _digest(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise InvalidArgument(f"invalid blob name {value!r}: expected a sha256 hex digest")
    return value


class BlobAccess:
    def __init__(self, blobs: BlobStore, ttl: float = TOKEN_TTL, max_blob: int = MAX_BLOB) -> None:
        self.blobs = blobs
        self.ttl = ttl
        self.max_blob = max_blob
        self.signer = TokenSigner()

    def upload_target(self, digest: str) -> BlobTarget:
        """Where to write a blob: nowhere when it is stored already (blobs are named by their bytes); a
        pre-signed PUT that S3 accepts only with these bytes and only if the object does not exist; or a token
        for `put`."""
        key = f"blobs/{_digest(digest)}"
        expires = time.time() + self.ttl
        if self.blobs.has_blob(digest):
            return BlobTarget(url="", token="", expires_at=expires, stored=True)
        objects = self.blobs.objects
        if isinstance(objects, S3Store):
            url, headers = objects.presigned_put(key, digest, int(self.ttl))
            return BlobTarget(url=url, token="", expires_at=expires, headers=headers)
        return BlobTarget(url="", token=self.signer.sign("put", digest, expires), expires_at=expires)

    def download_target(self, digest: str) -> BlobTarget:
        if not self.blobs.has_blob(_digest(digest)):
            raise NotFound(f"no blob {digest[:12]}… in storage")
        expires = time.time() + self.ttl
        objects = self.blobs.objects
        if isinstance(objects, S3Store):
            return BlobTarget(url=objects.presigned_get(f"blobs/{digest}", int(self.ttl)), token="",
                              expires_at=expires)
        return BlobTarget(url="", token=self.signer.sign("get", digest, expires), expires_at=expires)

    def put(self, digest: str, token: str, chunks: Iterable[bytes]) -> int:
        """Store the blob the chunks make up, if the upload token is valid, streaming it to a temporary file
        while hashing it (never whole in memory): it is committed only if it hashes to `digest` and holds at
        most `max_blob` bytes. Returns its size."""
        if not self.signer.check("put", digest, token):
            raise PermissionDenied("missing, expired or foreign upload token")
        return self.blobs.put_blob_stream(digest, chunks, self.max_blob)

    def get(self, digest: str, token: str) -> bytes:
        """The blob's bytes, if the download token is valid (a blob failing its hash check is `DataLoss`)."""
        if not self.signer.check("get", digest, token):
            raise PermissionDenied("missing, expired or foreign download token")
        try:
            return self.blobs.get_blob(digest)
        except FileNotFoundError:
            raise NotFound(f"no blob {digest[:12]}… in storage") from None
