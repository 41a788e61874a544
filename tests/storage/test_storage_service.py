"""StorageService: PNodes reach checkpoint blobs only through short-lived, scoped targets."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import boto3
import grpc
import pytest

from dcnr.errors import DataLoss
from dcnr.orchestrator.blob_access import BlobAccess, TokenSigner
from dcnr.proto.v2 import storage_pb2, storage_pb2_grpc
from dcnr.storage import BlobStore, http_put, open_store
from dcnr.transport.grpc.errors import guarded
from dcnr.transport.grpc.link import GrpcOrchestratorLink
from dcnr.transport.grpc.storage_service import StorageServicer


class PNodeBlobs:
    """A PNode's side of StorageService: blobs through the orchestrator link, as PNode p0."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.link = GrpcOrchestratorLink("", channel=channel)

    def put(self, data: bytes) -> str:
        return self.link.put_blob("p0", data)

    def get(self, digest: str) -> bytes:
        return self.link.get_blob("p0", digest)


def serve(blobs: BlobStore, ttl: float = 300.0) -> tuple[grpc.Server, grpc.Channel, BlobAccess]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    access = BlobAccess(blobs, ttl)
    storage_pb2_grpc.add_StorageServiceServicer_to_server(guarded(StorageServicer(access)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{port}"), access


@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return BlobStore(open_store(tmp_path.as_uri()))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return BlobStore(open_store(f"s3://{bucket}/ckpt", endpoint_url=endpoint))


@pytest.fixture()
def service(blobs: BlobStore) -> Iterator[tuple[BlobStore, grpc.Channel, BlobAccess]]:
    server, channel, access = serve(blobs)
    yield blobs, channel, access
    channel.close()
    server.stop(None)


def test_a_pnode_writes_and_reads_blobs_without_credentials(
        service: tuple[BlobStore, grpc.Channel, BlobAccess]) -> None:
    blobs, channel, _ = service
    client = PNodeBlobs(channel)
    data = b"vnode state" * 1000
    digest = client.put(data)
    assert digest == BlobStore.digest(data) and blobs.get_blob(digest) == data
    assert client.get(digest) == data
    stub = storage_pb2_grpc.StorageServiceStub(channel)
    target = stub.GetUploadTarget(storage_pb2.BlobTargetRequest(digest=BlobStore.digest(b"new")), timeout=10)
    assert target.expires_at - time.time() <= 301  # short-lived
    assert bool(target.url) == (blobs.objects.url.startswith("s3://")) != bool(target.token)  # a URL or a token
    assert not target.stored


def test_a_blob_stored_already_is_not_uploaded_again(service: tuple[BlobStore, grpc.Channel, BlobAccess]) -> None:
    """Blobs are named by their bytes: the one in storage is the one the PNode holds."""
    blobs, channel, _ = service
    digest = blobs.put_blob(b"unchanged VNode state")
    target = storage_pb2_grpc.StorageServiceStub(channel).GetUploadTarget(
        storage_pb2.BlobTargetRequest(digest=digest), timeout=10)
    assert target.stored and not target.url and not target.token
    before = blobs.objects.list_modified("blobs/")
    time.sleep(1.1)  # S3 keeps whole seconds: a rewrite would show
    assert PNodeBlobs(channel).put(b"unchanged VNode state") == digest
    assert blobs.objects.list_modified("blobs/") == before  # not written again


def test_a_presigned_upload_carries_the_blobs_checksum_and_cannot_overwrite(s3_endpoint: str) -> None:
    """The URL is signed (SigV4) with `x-amz-checksum-sha256` and `If-None-Match: *`, so S3 refuses a PUT that
    leaves them out or changes them (signature mismatch), bytes that do not hash to the checksum (BadDigest),
    and any PUT over an existing object (412). moto, the S3 of these tests, checks neither signatures nor
    checksums: this test checks that they are signed and sent, and that the no-overwrite condition holds
    (moto does enforce that) against a PNode that kept a target to replace an honest blob with its own bytes."""
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    blobs = BlobStore(open_store(f"s3://{bucket}/ckpt", endpoint_url=s3_endpoint))
    access = BlobAccess(blobs)
    data = b"honest parameters"
    digest = BlobStore.digest(data)
    honest, hostile = access.upload_target(digest), access.upload_target(digest)
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert honest.headers == {"x-amz-checksum-sha256": checksum, "If-None-Match": "*"}
    signed = parse_qs(urlparse(honest.url).query)["X-Amz-SignedHeaders"][0].split(";")
    assert {"x-amz-checksum-sha256", "if-none-match"} <= set(signed)
    assert http_put(honest.url, data, honest.headers)
    assert not http_put(hostile.url, b"forged parameters", hostile.headers)  # 412: the object exists
    assert blobs.get_blob(digest) == data
    assert access.upload_target(digest).stored


def test_a_streamed_upload_goes_to_a_temporary_file_as_it_arrives(tmp_path: Path) -> None:
    """The orchestrator never holds a whole blob: each chunk is on disk before the next one is read, and the
    blob appears under its name only once whole and hashed."""
    blobs = BlobStore(open_store(tmp_path.as_uri()))
    access = BlobAccess(blobs)
    pieces = [os.urandom(64 * 1024) for _ in range(8)]
    digest = BlobStore.digest(b"".join(pieces))
    token = access.upload_target(digest).token
    on_disk: list[int] = []

    def chunks() -> Iterator[bytes]:
        for piece in pieces:
            yield piece
            on_disk.append(sum(p.stat().st_size for p in (tmp_path / "blobs").glob(".*.tmp")))
            assert not blobs.has_blob(digest)

    assert access.put(digest, token, chunks()) == 8 * 64 * 1024
    assert on_disk == [i * 64 * 1024 for i in range(1, 9)]  # every chunk written before the next is read
    assert blobs.get_blob(digest) == b"".join(pieces) and list((tmp_path / "blobs").iterdir()) == [
        tmp_path / "blobs" / digest]


def test_bytes_that_do_not_match_their_name_are_refused(tmp_path: Path) -> None:
    """Uploads streamed through the orchestrator are hashed before they are committed. (A pre-signed S3 PUT
    goes straight to the store, which checks the checksum it was signed with; every read checks the hash
    again, see the next test.)"""
    blobs = BlobStore(open_store(tmp_path.as_uri()))
    server, channel, access = serve(blobs)
    try:
        digest = BlobStore.digest(b"honest")
        token = access.signer.sign("put", digest, time.time() + 60)
        with pytest.raises(grpc.RpcError) as info:
            storage_pb2_grpc.StorageServiceStub(channel).PutBlob(
                iter([storage_pb2.BlobUpload(digest=digest, token=token, data=b"forged")]), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "do not hash" in (info.value.details() or "")
        assert not blobs.objects.exists(f"blobs/{digest}")
    finally:
        channel.close()
        server.stop(None)


def test_a_corrupted_blob_is_refused_on_read(service: tuple[BlobStore, grpc.Channel, BlobAccess]) -> None:
    blobs, channel, _ = service
    client = PNodeBlobs(channel)
    digest = client.put(b"parameters")
    blobs.objects.put(f"blobs/{digest}", b"bit rot!!!")
    with pytest.raises(DataLoss):  # refused by the store, or by the PNode's own check of a pre-signed read
        client.get(digest)


@pytest.mark.parametrize("token", ["", "junk", "1.abc", "{past}"])
def test_missing_expired_or_forged_tokens_are_refused(tmp_path: Path, token: str) -> None:
    blobs = BlobStore(open_store(tmp_path.as_uri()))
    server, channel, access = serve(blobs)
    try:
        digest = blobs.put_blob(b"secret")
        if token == "{past}":
            token = access.signer.sign("get", digest, time.time() - 1)
        stub = storage_pb2_grpc.StorageServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.GetBlob(storage_pb2.BlobTargetRequest(digest=digest, token=token), timeout=10))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        other = TokenSigner().sign("get", digest, time.time() + 60)  # another orchestrator's key
        with pytest.raises(grpc.RpcError) as info:
            list(stub.GetBlob(storage_pb2.BlobTargetRequest(digest=digest, token=other), timeout=10))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        put_token = access.signer.sign("put", digest, time.time() + 60)  # scoped: a put token cannot read
        with pytest.raises(grpc.RpcError) as info:
            list(stub.GetBlob(storage_pb2.BlobTargetRequest(digest=digest, token=put_token), timeout=10))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        channel.close()
        server.stop(None)
