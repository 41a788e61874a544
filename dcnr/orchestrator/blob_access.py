"""Short-lived, scoped access to checkpoint blobs for PNodes.

Owns the tokens and pre-signed URLs that let a PNode write or read one blob, for a
few minutes, without ever holding a storage credential: S3-compatible stores get
pre-signed URLs; local storage gets an HMAC token for streaming the blob through
the orchestrator. A PNode gets a target only for the VNodes it hosts: to write a
VNode's blob it must host that VNode in the network's current placement; to read one,
a checkpoint of that network must name the blob as that VNode's state. Bytes that do
not hash to their blob's name are refused: a pre-signed PUT carries the blob's SHA-256
for S3 to check and may not replace an existing object; a streamed blob is written to
a temporary file while hashed and committed only when whole and true. A blob already
stored is not written again (its target says so). Knows nothing of gRPC:
`dcnr.transport.grpc.storage_service` serves it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from dcnr.errors import InvalidArgument, PermissionDenied, StorageFailed
from dcnr.orchestrator.checkpoints import Checkpoints
from dcnr.orchestrator.store import StateStore
from dcnr.storage import S3Store

TOKEN_TTL = 300.0  # seconds a target stays usable
MAX_BLOB = 8 * 2**30  # bytes of the largest blob streamed through the orchestrator


class TokenSigner:
    """HMAC tokens naming an operation, a blob, the PNode it was handed to and an expiry; the key lives only
    in this process."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or os.urandom(32)

    def sign(self, op: str, digest: str, pnode: str, expires: float) -> str:
        mac = hmac.new(self.key, f"{op}:{digest}:{expires:.0f}:{pnode}".encode(), hashlib.sha256).hexdigest()
        return f"{expires:.0f}.{mac}"

    def check(self, op: str, digest: str, pnode: str, token: str) -> bool:
        expires, _, _ = token.partition(".")
        if not (expires.isascii() and expires.isdigit()) or float(expires) < time.time():
            return False
        return hmac.compare_digest(token.encode(), self.sign(op, digest, pnode, float(expires)).encode())


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
    """Targets and streamed transfers for PNodes. Every method takes the calling PNode's id (`pnode`): whoever
    serves it says who the caller is."""

    def __init__(self, checkpoints: Checkpoints, store: StateStore, ttl: float = TOKEN_TTL,
                 max_blob: int = MAX_BLOB) -> None:
        self.checkpoints = checkpoints
        self.blobs = checkpoints.blobs
        self.store = store  # the current placements
        self.ttl = ttl
        self.max_blob = max_blob
        self.signer = TokenSigner()

    def _check_hosts(self, pnode: str, network: str, vnode: str, what: str) -> None:
        if not pnode or self.store.placements(network).get(vnode) != pnode:
            raise PermissionDenied(f"PNode {pnode or '(unnamed)'} does not host VNode {vnode!r} of network "
                                   f"{network!r}: no {what} target")

    def upload_target(self, pnode: str, network: str, vnode: str, digest: str) -> BlobTarget:
        """Where `pnode` writes `vnode`'s state: nowhere when the blob is stored already (blobs are named by
        their bytes); a pre-signed PUT that S3 accepts only with these bytes and only if the object does not
        exist; or a token for `put`."""
        key = self.blobs.key(_digest(digest))
        self._check_hosts(pnode, network, vnode, "upload")
        self.checkpoints.expect(digest)  # first: garbage collection spares it from now on
        expires = time.time() + self.ttl
        if self.blobs.has_blob(digest):
            return BlobTarget(url="", token="", expires_at=expires, stored=True)
        objects = self.blobs.objects
        if isinstance(objects, S3Store):
            url, headers = objects.presigned_put(key, digest, int(self.ttl))
            return BlobTarget(url=url, token="", expires_at=expires, headers=headers)
        return BlobTarget(url="", token=self.signer.sign("put", digest, pnode, expires), expires_at=expires)

    def download_target(self, pnode: str, network: str, vnode: str, digest: str) -> BlobTarget:
        """Where `pnode` reads `vnode`'s state from a checkpoint of `network`; a blob a checkpoint names that is
        not in storage is `StorageFailed` (retrying cannot bring it back)."""
        key = self.blobs.key(_digest(digest))
        self._check_hosts(pnode, network, vnode, "download")
        if not self.checkpoints.names(network, vnode, digest):
            raise PermissionDenied(f"no checkpoint of network {network!r} names blob {digest[:12]}… as the state "
                                   f"of VNode {vnode!r}: no download target")
        if not self.blobs.has_blob(digest):
            raise StorageFailed(f"blob {digest[:12]}…, VNode {vnode!r}'s state in a checkpoint of network "
                                f"{network!r}, is missing from storage {self.blobs.objects.url}")
        expires = time.time() + self.ttl
        objects = self.blobs.objects
        if isinstance(objects, S3Store):
            return BlobTarget(url=objects.presigned_get(key, int(self.ttl)), token="", expires_at=expires)
        return BlobTarget(url="", token=self.signer.sign("get", digest, pnode, expires), expires_at=expires)

    def put(self, pnode: str, digest: str, token: str, chunks: Iterable[bytes]) -> int:
        """Store the blob the chunks make up, if the upload token was handed to `pnode` and is valid, streaming
        it to a temporary file while hashing it (never whole in memory): it is committed only if it hashes to
        `digest` and holds at most `max_blob` bytes. Returns its size."""
        if not self.signer.check("put", digest, pnode, token):
            raise PermissionDenied("missing, expired or foreign upload token")
        return self.blobs.put_blob_stream(digest, chunks, self.max_blob)

    def get(self, pnode: str, digest: str, token: str) -> bytes:
        """The blob's bytes, if the download token was handed to `pnode` and is valid (a blob failing its hash
        check is `DataLoss`)."""
        if not self.signer.check("get", digest, pnode, token):
            raise PermissionDenied("missing, expired or foreign download token")
        try:
            return self.blobs.get_blob(digest)
        except FileNotFoundError:
            raise StorageFailed(f"blob {digest[:12]}… is missing from storage {self.blobs.objects.url}") from None
