"""Object storage: the same behaviour from a directory and from an S3-compatible server."""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dcnr.storage.objects
from dcnr.errors import DataLoss, InvalidArgument, StorageFailed
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
    with pytest.raises(StorageFailed, match=f"storage {store.url} could not write m.json: disk gone"):
        store.put("m.json", b"new, never finished")
    assert store.get("m.json") == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary file left


def test_a_full_disk_is_a_storage_failure_naming_the_store_the_object_and_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    for write in (lambda: store.put("blobs/x", b"state"), lambda: store.put_stream("blobs/x", [b"st", b"ate"])):
        with pytest.raises(StorageFailed) as info:
            write()
        assert str(info.value) == f"storage {store.url} could not write blobs/x: No space left on device (ENOSPC)"
    assert store.list("") == [] and list(tmp_path.rglob("*.tmp")) == []


def test_s3_errors_are_storage_failures(s3_endpoint: str) -> None:
    store = S3Store(f"missing-{uuid.uuid4().hex[:12]}", "p", endpoint_url=s3_endpoint)
    for attempt in (lambda: store.put("k", b"x"), lambda: store.put_stream("k", [b"x"]), lambda: store.get("k"),
                    lambda: store.list("")):
        with pytest.raises(StorageFailed, match=rf"storage {store.url} could not \w+ .*NoSuchBucket"):
            attempt()


def test_a_streamed_write_that_fails_midway_leaves_nothing(store: ObjectStore, tmp_path: Path) -> None:
    store.put("o", b"old")

    def chunks() -> Iterator[bytes]:
        yield b"first part"
        raise InvalidArgument("the uploader lied")

    with pytest.raises(InvalidArgument, match="the uploader lied"):
        store.put_stream("o", chunks())
    with pytest.raises(InvalidArgument):
        store.put_stream("new", chunks())
    assert store.get("o") == b"old" and store.list("") == ["o"]
    assert list(tmp_path.rglob("*.tmp")) == []
    assert store.put_stream("new", iter([b"a", b"", b"bc"])) == 3 and store.get("new") == b"abc"


def test_objects_are_listed_with_the_time_they_were_written(store: ObjectStore) -> None:
    before = time.time()
    store.put("a/x", b"1")
    store.put_stream("a/y", [b"2"])
    store.put("b/z", b"3")
    times = store.list_modified("a/")
    assert sorted(times) == ["a/x", "a/y"]
    assert all(before - 2 <= t <= time.time() + 2 for t in times.values())  # S3 keeps whole seconds


def test_a_blob_streamed_in_is_committed_only_when_whole_and_true(store: ObjectStore) -> None:
    blobs = BlobStore(store)
    data = os.urandom(3000)
    digest = BlobStore.digest(data)
    with pytest.raises(InvalidArgument, match=f"do not hash to {digest[:12]}"):
        blobs.put_blob_stream(digest, [data[:1000], b"forged"], limit=10_000)
    with pytest.raises(StorageFailed, match="is larger than 2500 bytes"):
        blobs.put_blob_stream(digest, [data[:2000], data[2000:]], limit=2500)
    assert not blobs.has_blob(digest) and store.list("") == []
    assert blobs.put_blob_stream(digest, [data[:1000], data[1000:]], limit=3000) == 3000
    assert blobs.get_blob(digest) == data and list(blobs.list_blobs()) == [digest]
    blobs.delete_blob(digest)
    assert not blobs.has_blob(digest)


def test_presigned_urls_give_scoped_access_without_credentials(s3_endpoint: str) -> None:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    store = S3Store(bucket, "p", endpoint_url=s3_endpoint)
    digest = BlobStore.digest(b"payload")
    url, headers = store.presigned_put(f"blobs/{digest}", digest, expires=60)
    assert http_put(url, b"payload", headers)
    assert store.get(f"blobs/{digest}") == b"payload"
    assert http_get(store.presigned_get(f"blobs/{digest}", expires=60)) == b"payload"


class _Answers(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next status of the server's `statuses` (0: after a second), keeping its
    headers in `seen`."""

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def _answer(self) -> None:
        server = self.server
        assert isinstance(server, _StatusServer)
        server.seen.append({k.lower(): v for k, v in self.headers.items()})
        status = server.statuses.pop(0)
        if status == 0:  # a store that hangs
            time.sleep(1.0)
            status = 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _StatusServer(http.server.ThreadingHTTPServer):
    statuses: list[int]
    seen: list[dict[str, str]]


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, _StatusServer]]:
    monkeypatch.setattr(dcnr.storage.objects, "HTTP_BACKOFF", 0.0)
    server = _StatusServer(("127.0.0.1", 0), _Answers)
    server.statuses, server.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/blobs/k", server
    server.shutdown()
    server.server_close()


def test_presigned_requests_retry_a_failing_store_then_fail_naming_it(answers: tuple[str, _StatusServer]) -> None:
    url, server = answers
    server.statuses = [503, 500, 200]
    assert http_put(url, b"x") and len(server.seen) == 3
    server.statuses = [503, 503, 503, 200]
    with pytest.raises(StorageFailed, match="could not write after 3 attempts: HTTP 503"):
        http_put(url, b"x")
    server.statuses = [502, 200]
    assert http_get(url) == b"ok"


def test_a_refused_or_timed_out_presigned_request_fails_at_once(answers: tuple[str, _StatusServer]) -> None:
    url, server = answers
    server.statuses = [403, 200]
    with pytest.raises(StorageFailed, match="object store refused to read: HTTP 403"):
        http_get(url)
    assert len(server.seen) == 1 and server.statuses == [200]
    server.statuses = [0, 200]
    with pytest.raises(StorageFailed, match="object store could not write: timed out"):
        http_put(url, b"x", timeout=0.3)
    assert len(server.seen) == 2 and server.statuses == [200]


def test_a_presigned_put_sends_its_signed_headers_and_reads_412_as_already_stored(
        answers: tuple[str, _StatusServer]) -> None:
    url, server = answers
    server.statuses = [412]
    assert http_put(url, b"x", {"If-None-Match": "*", "x-amz-checksum-sha256": "abc="}) is False
    assert server.seen[0]["if-none-match"] == "*" and server.seen[0]["x-amz-checksum-sha256"] == "abc="
    server.statuses = [412]  # without the no-overwrite condition, 412 is a refusal like any other
    with pytest.raises(StorageFailed, match="HTTP 412"):
        http_put(url, b"x")


@pytest.mark.parametrize("url", ["http://x/y", "s3://", "file://host/path", "ftp://a"])
def test_unknown_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(ValueError, match="storage URL"):
        open_store(url)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_any_bytes_round_trip_through_a_blob(tmp_path: Path, data: bytes) -> None:
    blobs = BlobStore(FileStore(tmp_path / "blobs"))
    assert blobs.get_blob(blobs.put_blob(data)) == data
