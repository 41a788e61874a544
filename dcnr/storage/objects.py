"""Byte objects by key in a local directory or an S3-compatible bucket, and sha256-named objects on top.

A store that fails or refuses (a full disk, no permission, an error answer from S3) raises
`StorageFailed` naming the store, what it could not do and why; an absent object is
`FileNotFoundError` on `get`.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlparse

from dcnr.errors import DataLoss, InvalidArgument, StorageFailed
from dcnr.storage.files import write_atomic

_T = TypeVar("_T")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class IntegrityError(DataLoss):
    """An object's bytes do not hash to its name: it is refused, never loaded."""


def _check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/") or key.endswith("/"):
        raise ValueError(f"invalid object key {key!r}")
    return key


class ObjectStore(Protocol):
    """Whole objects by key: a write is all-or-nothing, a read sees a whole object or none."""

    url: str

    def put(self, key: str, data: bytes) -> None: ...
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write the object the chunks make up without holding it in memory; nothing is written if reading
        the chunks raises (that error propagates). Returns its size."""
        ...
    def get(self, key: str) -> bytes: ...  # FileNotFoundError when absent
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def list_modified(self, prefix: str) -> dict[str, float]:
        """Every key under `prefix` with the Unix time its object was last written."""
        ...
    def delete(self, key: str) -> None: ...  # nothing happens when absent


def _why(exc: OSError) -> str:
    """`No space left on device (ENOSPC)`: the reason, and the name to search for."""
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc} ({name})" if name else str(exc)


class FileStore:
    """Objects as files under a root directory, each written with `write_atomic`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = self.root.resolve().as_uri()
        with self._failures("create its directory"):
            self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageFailed(f"storage {self.url} could not {what}: {_why(exc)}") from None

    def put(self, key: str, data: bytes) -> None:
        with self._failures(f"write {key}"):
            write_atomic(self._path(key), data)  # readers see the old object or the new one, even after a crash

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        with self._failures(f"write {key}"):
            return write_atomic(self._path(key), chunks)  # a temporary file, renamed once every chunk is in

    def get(self, key: str) -> bytes:
        try:
            with self._failures(f"read {key}"):
                return self._path(key).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {key!r} in {self.url}") from None

    def exists(self, key: str) -> bool:
        with self._failures(f"look up {key}"):
            return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, float]:
        base = self.root
        with self._failures(f"list {prefix or 'its objects'}"):
            return {str(p.relative_to(base)): p.stat().st_mtime for p in base.rglob("*")
                    if p.is_file() and not p.name.startswith(".") and str(p.relative_to(base)).startswith(prefix)}

    def delete(self, key: str) -> None:
        with self._failures(f"delete {key}"):
            self._path(key).unlink(missing_ok=True)


class S3Store:
    """Objects in an S3-compatible bucket under a prefix, with standard S3 calls only (a PUT is atomic).

    Its client signs with SigV4, which signs the headers a pre-signed PUT must send (its checksum and its
    no-overwrite condition), so that a URL cannot be used without them."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 client: Any | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url,
                                             config=Config(signature_version="s3v4"))
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """S3's refusals and errors (after botocore's own retries), and a failure to spool, as `StorageFailed`."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StorageFailed(f"storage {self.url} could not {what}: {error.get('Code', '?')}: "
                                f"{error.get('Message', exc)}") from None
        except (BotoCoreError, Boto3Error) as exc:
            raise StorageFailed(f"storage {self.url} could not {what}: {exc}") from None
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageFailed(f"storage {self.url} could not {what}: {_why(exc)}") from None

    def put(self, key: str, data: bytes) -> None:
        with self._failures(f"write {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Spooled to a local temporary file first: nothing reaches the bucket unless every chunk was read."""
        with self._failures(f"write {key}"), tempfile.TemporaryFile() as spool:
            size = 0
            for chunk in chunks:
                spool.write(chunk)
                size += len(chunk)
            spool.seek(0)
            self.client.upload_fileobj(spool, self.bucket, self._key(key))  # in parts when large
        return size

    def get(self, key: str) -> bytes:
        with self._failures(f"read {key}"):
            try:
                return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
            except self.client.exceptions.NoSuchKey:
                raise FileNotFoundError(f"no object {key!r} in {self.url}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with self._failures(f"look up {key}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise

    def list(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, float]:
        if ".." in prefix.split("/"):
            raise ValueError(f"invalid object key prefix {prefix!r}")
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: dict[str, float] = {}
        with self._failures(f"list {prefix or 'its objects'}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                found.update((obj["Key"][strip:], obj["LastModified"].timestamp()) for obj in page.get("Contents", []))
        return found

    def delete(self, key: str) -> None:
        with self._failures(f"delete {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def presigned_get(self, key: str, expires: int = 300) -> str:
        """A URL that reads one object for `expires` seconds: scoped access without credentials."""
        return str(self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                                            "Key": self._key(key)},
                                                       ExpiresIn=expires))

    def presigned_put(self, key: str, sha256_hex: str, expires: int = 300) -> tuple[str, dict[str, str]]:
        """A URL that writes one object for `expires` seconds, and the headers its PUT must send: they are
        signed, so S3 refuses a PUT without them, refuses bytes whose SHA-256 is not `sha256_hex`
        (`x-amz-checksum-sha256`), and never replaces an object that exists (`If-None-Match: *`)."""
        checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        url = self.client.generate_presigned_url("put_object", Params={
            "Bucket": self.bucket, "Key": self._key(key), "ChecksumSHA256": checksum, "IfNoneMatch": "*"},
            ExpiresIn=expires)
        return str(url), {"x-amz-checksum-sha256": checksum, "If-None-Match": "*"}


HTTP_ATTEMPTS = 3  # tries of a pre-signed request that fails with a 5xx answer or no answer at all
HTTP_BACKOFF = 0.5  # seconds before the second try; doubled before each next one


def http_get(url: str, timeout: float = 60.0) -> bytes:
    """Read an object through a pre-signed URL."""
    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return bytes(reply.read())

    return _http("read", get)


def http_put(url: str, data: bytes, headers: Mapping[str, str] | None = None, timeout: float = 60.0) -> bool:
    """Write an object through a pre-signed URL, sending the `headers` it was signed with; returns False when
    the URL's condition refused it because the object exists already (HTTP 412 to `If-None-Match: *`).
    Content-Type goes empty (urllib would add one; a URL that signs it signs it empty)."""
    request = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": "", **(headers or {})})

    def put() -> bool:
        try:
            urllib.request.urlopen(request, timeout=timeout).close()
        except urllib.error.HTTPError as exc:
            if exc.code == 412 and (headers or {}).get("If-None-Match") == "*":
                return False
            raise
        return True

    return _http("write", put)


def _http(what: str, attempt: Callable[[], _T]) -> _T:
    """`attempt()`, tried again after a 5xx answer or a failed connection (a few times, backing off); every
    failure that remains is `StorageFailed`: a refusal (4xx: an expired or foreign URL, a checksum that does
    not match), a request that timed out (not tried again: that would multiply the wait), or a store that
    stays unreachable or broken."""
    for n in range(HTTP_ATTEMPTS):
        try:
            return attempt()
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise StorageFailed(f"object store refused to {what}: HTTP {exc.code} {exc.reason}") from None
            failure = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
                raise StorageFailed(f"object store could not {what}: timed out") from None
            failure = str(exc)
        if n + 1 < HTTP_ATTEMPTS:
            time.sleep(HTTP_BACKOFF * 2**n)
    raise StorageFailed(f"object store could not {what} after {HTTP_ATTEMPTS} attempts: {failure}")


def open_store(url: str, endpoint_url: str | None = None) -> ObjectStore:
    """`file:///path` or `s3://bucket/prefix` (with `endpoint_url` for any S3-compatible store)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"storage URL {url!r}: file URLs name a local path (file:///path)")
        return FileStore(unquote(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"storage URL {url!r}: expected s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path, endpoint_url)
    raise ValueError(f"storage URL {url!r}: expected file:///path or s3://bucket/prefix")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_checked(objects: ObjectStore, prefix: str, data: bytes, suffix: str = "") -> str:
    """Store `data` as `<prefix>/<sha256 of data><suffix>` and return that key; the same bytes
    under the same prefix are written once."""
    key = f"{prefix}/{sha256(data)}{suffix}"
    if not objects.exists(key):
        objects.put(key, data)
    return key


def get_checked(objects: ObjectStore, key: str) -> bytes:
    """Read an object that `put_checked` stored, refusing it unless its bytes hash to its name."""
    digest = key.rpartition("/")[2].partition(".")[0]
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"invalid object key {key!r}: expected <prefix>/<sha256 hex digest>[.suffix]")
    data = objects.get(key)
    if sha256(data) != digest:
        raise IntegrityError(f"object {key} in {objects.url} does not match its hash: refused")
    return data


class _Verified:
    """An upload's chunks, passed on while they are counted and hashed: past `limit` bytes the next step raises
    `StorageFailed`, and the last one raises `InvalidArgument` unless they hash to `digest` — so a store writing
    from it (`ObjectStore.put_stream`) commits exactly that blob or nothing."""

    def __init__(self, chunks: Iterable[bytes], digest: str, limit: int) -> None:
        self.chunks, self.digest, self.limit = chunks, digest, limit
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        hashed = hashlib.sha256()
        for chunk in self.chunks:
            self.size += len(chunk)
            if self.size > self.limit:
                raise StorageFailed(f"blob {self.digest[:12]}… is larger than {self.limit} bytes, the most this "
                                    "orchestrator stores: refused")
            hashed.update(chunk)
            yield chunk
        if hashed.hexdigest() != self.digest:
            raise InvalidArgument(f"blob bytes do not hash to {self.digest[:12]}…: refused")


class BlobStore:
    """Content-addressed blobs (`blobs/<sha256>`) and named manifests over an object store.

    A blob is written once under the hash of its bytes and checked on every read; a
    manifest names blobs and is written last, so whoever reads a manifest finds whole
    blobs behind it — a crash mid-checkpoint leaves the previous manifest in force.
    """

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    digest = staticmethod(sha256)

    @staticmethod
    def key(digest: str) -> str:
        """The object key of blob `digest` (ValueError for a name that is not a sha256 hex digest)."""
        if not _SHA256.fullmatch(digest):
            raise ValueError(f"invalid blob name {digest!r}: expected a sha256 hex digest")
        return f"blobs/{digest}"

    def put_blob(self, data: bytes) -> str:
        return put_checked(self.objects, "blobs", data).rpartition("/")[2]

    def put_blob_stream(self, digest: str, chunks: Iterable[bytes], limit: int) -> int:
        """Store the blob the chunks make up, streamed through a temporary object while hashed, never whole in
        memory: committed only if it hashes to `digest` (`InvalidArgument` otherwise) and holds at most `limit`
        bytes (`StorageFailed` otherwise). Returns its size."""
        verified = _Verified(chunks, digest, limit)
        self.objects.put_stream(self.key(digest), verified)
        return verified.size

    def get_blob(self, digest: str) -> bytes:
        return get_checked(self.objects, self.key(digest))

    def has_blob(self, digest: str) -> bool:
        return self.objects.exists(self.key(digest))

    def list_blobs(self) -> dict[str, float]:
        """Every stored blob's name, with the Unix time it was written."""
        return {k[len("blobs/"):]: t for k, t in self.objects.list_modified("blobs/").items()}

    def delete_blob(self, digest: str) -> None:
        self.objects.delete(self.key(digest))

    def put_manifest(self, key: str, data: bytes) -> None:
        self.objects.put(f"manifests/{key}", data)

    def get_manifest(self, key: str) -> bytes:
        return self.objects.get(f"manifests/{key}")

    def list_manifests(self, prefix: str) -> list[str]:
        return [k[len("manifests/"):] for k in self.objects.list(f"manifests/{prefix}")]

    def delete_manifest(self, key: str) -> None:
        self.objects.delete(f"manifests/{key}")
