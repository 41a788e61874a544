"""Byte objects by key in a local directory or an S3-compatible bucket, and sha256-named objects on top."""

from __future__ import annotations

import contextlib
import hashlib
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from dcnr.errors import DataLoss, PermissionDenied, Unavailable
from dcnr.storage.files import write_atomic

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
    def get(self, key: str) -> bytes: ...  # FileNotFoundError when absent
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...


class FileStore:
    """Objects as files under a root directory, each written with `write_atomic`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes) -> None:
        write_atomic(self._path(key), data)  # readers see the old object or the new one, even after a crash

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {key!r} in {self.url}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root
        return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(".") and str(p.relative_to(base)).startswith(prefix))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """Objects in an S3-compatible bucket under a prefix, with standard S3 calls only (a PUT is atomic)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 client: Any | None = None) -> None:
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"no object {key!r} in {self.url}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        if ".." in prefix.split("/"):
            raise ValueError(f"invalid object key prefix {prefix!r}")
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def presigned_get(self, key: str, expires: int = 300) -> str:
        """A URL that reads one object for `expires` seconds: scoped access without credentials."""
        return str(self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                                            "Key": self._key(key)},
                                                       ExpiresIn=expires))

    def presigned_put(self, key: str, expires: int = 300) -> str:
        return str(self.client.generate_presigned_url("put_object", Params={"Bucket": self.bucket,
                                                                            "Key": self._key(key)},
                                                       ExpiresIn=expires))


def http_get(url: str, timeout: float = 60.0) -> bytes:
    """Read an object through a pre-signed URL."""
    with _http_errors("read"), urllib.request.urlopen(url, timeout=timeout) as reply:
        return bytes(reply.read())


def http_put(url: str, data: bytes, timeout: float = 60.0) -> None:
    """Write an object through a pre-signed URL (no Content-Type: a pre-signed PUT signs it as empty)."""
    request = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": ""})
    with _http_errors("write"):
        urllib.request.urlopen(request, timeout=timeout).close()


@contextlib.contextmanager
def _http_errors(what: str) -> Iterator[None]:
    """A store that cannot be reached or fails (5xx) is `Unavailable` (worth retrying); a refused request
    (4xx: an expired or foreign URL) is `PermissionDenied`."""
    try:
        yield
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise Unavailable(f"object store could not {what}: HTTP {exc.code} {exc.reason}") from None
        raise PermissionDenied(f"object store refused to {what}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"object store could not {what}: {exc}") from None


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


class BlobStore:
    """Content-addressed blobs (`blobs/<sha256>`) and named manifests over an object store.

    A blob is written once under the hash of its bytes and checked on every read; a
    manifest names blobs and is written last, so whoever reads a manifest finds whole
    blobs behind it — a crash mid-checkpoint leaves the previous manifest in force.
    """

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    digest = staticmethod(sha256)

    def put_blob(self, data: bytes) -> str:
        return put_checked(self.objects, "blobs", data).rpartition("/")[2]

    def get_blob(self, digest: str) -> bytes:
        if not _SHA256.fullmatch(digest):
            raise ValueError(f"invalid blob name {digest!r}: expected a sha256 hex digest")
        return get_checked(self.objects, f"blobs/{digest}")

    def put_manifest(self, key: str, data: bytes) -> None:
        self.objects.put(f"manifests/{key}", data)

    def get_manifest(self, key: str) -> bytes:
        return self.objects.get(f"manifests/{key}")

    def list_manifests(self, prefix: str) -> list[str]:
        return [k[len("manifests/"):] for k in self.objects.list(f"manifests/{prefix}")]
