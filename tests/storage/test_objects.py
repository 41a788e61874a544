"""Object storage: the same behaviour from a directory and from an S3-compatible server."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcnr.errors import DataLoss
from dcnr.storage import (
    BlobStore,
    FileStore,
    IntegrityError,
    ObjectStore,
    S3Store,
    get_checked,
    http_get,
    http_put,
    open_store,
    put_checked,
)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return open_store(tmp_path.as_uri())
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return open_store(f"s3://{bucket}/ckpt", endpoint_url=endpoint)


def test_put_get_list_delete(store: ObjectStore) -> None:
    store.put("a/x.bin", b"one")
    store.put("a/y.bin", b"two")
    store.put("b/z.bin", b"")
    store.put("a/x.bin", b"three")  # replaced whole
    assert store.get("a/x.bin") == b"three" and store.get("b/z.bin") == b""
    assert store.list("a/") == ["a/x.bin", "a/y.bin"]
    assert store.exists("a/y.bin") and not store.exists("a/nothing")
    store.delete("a/y.bin")
    assert store.list("") == ["a/x.bin", "b/z.bin"]
    with pytest.raises(FileNotFoundError, match=r"no object 'a/y\.bin'"):
        store.get("a/y.bin")


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//../b", "a/", "", "a/../../b"])
def test_keys_cannot_escape(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(key, b"x")


def test_blobs_are_content_addressed_and_checked(store: ObjectStore) -> None:
    blobs = BlobStore(store)
    digest = blobs.put_blob(b"parameters")
    assert digest == BlobStore.digest(b"parameters") and blobs.put_blob(b"parameters") == digest
    assert blobs.get_blob(digest) == b"parameters"
    store.put(f"blobs/{digest}", b"tampered!!")  # a corrupted or malicious object
    with pytest.raises(IntegrityError, match="does not match its hash"):
        blobs.get_blob(digest)
    with pytest.raises(ValueError, match="sha256"):
        blobs.get_blob("../../etc/passwd")
    blobs.put_manifest("net/00000005.json", b"{}")
    blobs.put_manifest("net/00000010.json", b"{}")
    assert blobs.list_manifests("net/") == ["net/00000005.json", "net/00000010.json"]


def test_checked_objects_are_named_by_their_hash_and_refused_when_altered(store: ObjectStore) -> None:
    key = put_checked(store, "data/x", b"tokens", ".safetensors")
    assert key == f"data/x/{hashlib.sha256(b'tokens').hexdigest()}.safetensors"
    assert put_checked(store, "data/x", b"tokens", ".safetensors") == key and store.list("data/") == [key]
    assert get_checked(store, key) == b"tokens"
    store.put(key, b"tokenz")
    with pytest.raises(IntegrityError, match=r"object data/x/.* does not match its hash: refused") as info:
        get_checked(store, key)
    assert isinstance(info.value, DataLoss) and isinstance(info.value, ValueError)
    for bad in ("data/x/record.json", "data/x/abc.json"):
        with pytest.raises(ValueError, match="expected <prefix>/<sha256 hex digest>"):
            get_checked(store, bad)
    with pytest.raises(FileNotFoundError):
        get_checked(store, f"data/y/{'0' * 64}.json")


def test_a_crash_mid_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path)
    store.put("m.json", b"old")

    def crash(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        store.put("m.json", b"new, never finished")
    assert store.get("m.json") == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary file left


def test_presigned_urls_give_scoped_access_without_credentials(s3_endpoint: str) -> None:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    store = S3Store(bucket, "p", endpoint_url=s3_endpoint)
    http_put(store.presigned_put("blobs/k", expires=60), b"payload")
    assert store.get("blobs/k") == b"payload"
    assert http_get(store.presigned_get("blobs/k", expires=60)) == b"payload"


@pytest.mark.parametrize("url", ["http://x/y", "s3://", "file://host/path", "ftp://a"])
def test_unknown_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(ValueError, match="storage URL"):
        open_store(url)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_any_bytes_round_trip_through_a_blob(tmp_path: Path, data: bytes) -> None:
    blobs = BlobStore(FileStore(tmp_path / "blobs"))
    assert blobs.get_blob(blobs.put_blob(data)) == data
