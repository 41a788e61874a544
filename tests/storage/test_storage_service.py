"""StorageService: PNodes reach checkpoint blobs only through short-lived targets, scoped to the VNodes they host."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import boto3
import grpc
import pytest

from dcnr.errors import DataLoss, PermissionDenied, StorageFailed
from dcnr.orchestrator.blob_access import BlobAccess, TokenSigner
from dcnr.orchestrator.checkpoints import MANIFEST_FORMAT, Checkpoints
from dcnr.orchestrator.store import SQLiteStore
from dcnr.proto.v2 import storage_pb2, storage_pb2_grpc
from dcnr.storage import BlobStore, http_put, open_store
from dcnr.transport.grpc.errors import guarded
from dcnr.transport.grpc.link import GrpcOrchestratorLink
from dcnr.transport.grpc.storage_service import StorageServicer

NET = "net"
PLACEMENT = {"block0": "p0", "block1": "p0", "head": "p1"}  # where the network's VNodes live now


@dataclass
class Service:
    blobs: BlobStore
    access: BlobAccess
    channel: grpc.Channel

    def pnode(self, pnode: str, vnode: str = "block0") -> PNodeBlobs:
        return PNodeBlobs(self.channel, pnode, vnode)

    def stub(self) -> storage_pb2_grpc.StorageServiceStub:
        return storage_pb2_grpc.StorageServiceStub(self.channel)

    def checkpoint(self, step: int, vnodes: dict[str, str]) -> None:
        """A manifest of NET naming these blobs as these VNodes' state."""
        self.blobs.put_manifest(f"{NET}/{step:012d}.json", json.dumps(
            {"format": MANIFEST_FORMAT, "network": NET, "step": step, "vnodes": vnodes}).encode())


class PNodeBlobs:
    """A PNode's side of StorageService: one VNode's blobs through the orchestrator link."""

    def __init__(self, channel: grpc.Channel, pnode: str, vnode: str) -> None:
        self.link = GrpcOrchestratorLink("", channel=channel)
        self.pnode, self.vnode = pnode, vnode

    def put(self, data: bytes) -> str:
        return self.link.put_blob(self.pnode, NET, self.vnode, data)

    def get(self, digest: str) -> bytes:
        return self.link.get_blob(self.pnode, NET, self.vnode, digest)


@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return BlobStore(open_store(tmp_path.as_uri()))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return BlobStore(open_store(f"s3://{bucket}/ckpt", endpoint_url=endpoint))


def serve(blobs: BlobStore, state: Path) -> tuple[grpc.Server, Service]:
    store = SQLiteStore(state / "state.sqlite")
    store.set_placements(NET, PLACEMENT)
    access = BlobAccess(Checkpoints(blobs), store)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    storage_pb2_grpc.add_StorageServiceServicer_to_server(guarded(StorageServicer(access)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, Service(blobs, access, grpc.insecure_channel(f"127.0.0.1:{port}"))


@pytest.fixture()
def service(blobs: BlobStore, tmp_path: Path) -> Iterator[Service]:
    server, svc = serve(blobs, tmp_path)
    yield svc
    svc.channel.close()
    server.stop(None)


@pytest.fixture()
def local(tmp_path: Path) -> Iterator[Service]:
    """The service over local storage: blobs streamed through the orchestrator with tokens."""
    server, svc = serve(BlobStore(open_store((tmp_path / "storage").as_uri())), tmp_path)
    yield svc
    svc.channel.close()
    server.stop(None)


def test_a_pnode_writes_and_reads_its_vnodes_blobs_without_credentials(service: Service) -> None:
    client = service.pnode("p0")
    data = b"vnode state" * 1000
    digest = client.put(data)
    assert digest == BlobStore.digest(data) and service.blobs.get_blob(digest) == data
    service.checkpoint(5, {"block0": digest})
    assert client.get(digest) == data
    target = service.stub().GetUploadTarget(storage_pb2.BlobTargetRequest(
        digest=BlobStore.digest(b"new"), pnode="p0", network=NET, vnode="block1"), timeout=10)
    assert target.expires_at - time.time() <= 301  # short-lived
    assert bool(target.url) == (service.blobs.objects.url.startswith("s3://")) != bool(target.token)  # URL or token
    assert not target.stored


def test_upload_targets_only_for_a_vnode_the_caller_hosts_now(service: Service) -> None:
    data = b"p1 claims block0"
    for pnode, network, vnode in (("p1", NET, "block0"), ("p0", NET, "head"), ("p0", "other-net", "block0"),
                                  ("", NET, "block0"), ("p0", NET, "nope")):
        with pytest.raises(PermissionDenied, match=f"does not host VNode '{vnode}' of network '{network}'"):
            GrpcOrchestratorLink("", channel=service.channel).put_blob(pnode, network, vnode, data)
    assert service.blobs.list_blobs() == {}
    assert service.pnode("p1", "head").put(data) == BlobStore.digest(data)  # its own VNode: granted


def test_download_targets_only_for_a_blob_a_checkpoint_names_for_a_vnode_the_caller_hosts(
        service: Service) -> None:
    secret = service.pnode("p0").put(b"block0's parameters")
    theirs = service.pnode("p1", "head").put(b"head's parameters")
    with pytest.raises(PermissionDenied, match="no checkpoint of network 'net' names blob"):
        service.pnode("p0").get(secret)  # stored, but no checkpoint names it yet
    service.checkpoint(3, {"block0": secret, "head": theirs})
    service.checkpoint(6, {"block0": BlobStore.digest(b"later"), "head": theirs})
    assert service.pnode("p0").get(secret) == b"block0's parameters"  # an older checkpoint counts too
    with pytest.raises(PermissionDenied, match="PNode p1 does not host VNode 'block0'"):
        service.pnode("p1", "block0").get(secret)
    with pytest.raises(PermissionDenied, match=r"names blob .* as the state of VNode 'block1'"):
        service.pnode("p0", "block1").get(secret)  # p0 hosts block1, but the blob is not block1's
    with pytest.raises(PermissionDenied, match="no checkpoint"):
        service.pnode("p0").get(theirs)  # head's blob, asked for as block0's


def test_a_blob_a_checkpoint_names_that_storage_lost_is_a_storage_failure(service: Service) -> None:
    digest = service.pnode("p0").put(b"state")
    service.checkpoint(1, {"block0": digest})
    service.blobs.delete_blob(digest)
    with pytest.raises(StorageFailed, match=f"blob {digest[:12]}…, VNode 'block0'.* is missing from storage"):
        service.pnode("p0").get(digest)


def test_a_blob_stored_already_is_not_uploaded_again(service: Service) -> None:
    """Blobs are named by their bytes: the one in storage is the one the PNode holds."""
    digest = service.blobs.put_blob(b"unchanged VNode state")
    target = service.stub().GetUploadTarget(storage_pb2.BlobTargetRequest(
        digest=digest, pnode="p0", network=NET, vnode="block0"), timeout=10)
    assert target.stored and not target.url and not target.token
    before = service.blobs.list_blobs()
    time.sleep(1.1)  # S3 keeps whole seconds: a rewrite would show
    assert service.pnode("p0").put(b"unchanged VNode state") == digest
    assert service.blobs.list_blobs() == before  # not written again


def test_a_presigned_upload_carries_the_blobs_checksum_and_cannot_overwrite(s3_endpoint: str, tmp_path: Path) -> None:
    """The URL is signed (SigV4) with `x-amz-checksum-sha256` and `If-None-Match: *`, so S3 refuses a PUT that
    leaves them out or changes them (signature mismatch), bytes that do not hash to the checksum (BadDigest),
    and any PUT over an existing object (412). moto, the S3 of these tests, checks neither signatures nor
    checksums: this test checks that they are signed and sent, and that the no-overwrite condition holds
    (moto does enforce that) against a PNode that kept a target to replace an honest blob with its own bytes."""
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    server, svc = serve(BlobStore(open_store(f"s3://{bucket}/ckpt", endpoint_url=s3_endpoint)), tmp_path)
    try:
        data = b"honest parameters"
        digest = BlobStore.digest(data)
        honest = svc.access.upload_target("p0", NET, "block0", digest)
        hostile = svc.access.upload_target("p0", NET, "block1", digest)
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        assert honest.headers == {"x-amz-checksum-sha256": checksum, "If-None-Match": "*"}
        signed = parse_qs(urlparse(honest.url).query)["X-Amz-SignedHeaders"][0].split(";")
        assert {"x-amz-checksum-sha256", "if-none-match"} <= set(signed)
        assert http_put(honest.url, data, honest.headers)
        assert not http_put(hostile.url, b"forged parameters", hostile.headers)  # 412: the object exists
        assert svc.blobs.get_blob(digest) == data
        assert svc.access.upload_target("p0", NET, "block0", digest).stored
    finally:
        svc.channel.close()
        server.stop(None)


def test_a_streamed_upload_goes_to_a_temporary_file_as_it_arrives(local: Service) -> None:
    """The orchestrator never holds a whole blob: each chunk is on disk before the next one is read, and the
    blob appears under its name only once whole and hashed."""
    pieces = [os.urandom(64 * 1024) for _ in range(8)]
    digest = BlobStore.digest(b"".join(pieces))
    token = local.access.upload_target("p0", NET, "block0", digest).token
    folder = Path(urlparse(local.blobs.objects.url).path) / "blobs"
    on_disk: list[int] = []

    def chunks() -> Iterator[bytes]:
        for piece in pieces:
            yield piece
            on_disk.append(sum(p.stat().st_size for p in folder.glob(".*.tmp")))
            assert not local.blobs.has_blob(digest)

    assert local.access.put("p0", digest, token, chunks()) == 8 * 64 * 1024
    assert on_disk == [i * 64 * 1024 for i in range(1, 9)]  # every chunk written before the next is read
    assert local.blobs.get_blob(digest) == b"".join(pieces) and list(folder.iterdir()) == [folder / digest]


def test_bytes_that_do_not_match_their_name_are_refused(local: Service) -> None:
    """Uploads streamed through the orchestrator are hashed before they are committed. (A pre-signed S3 PUT
    goes straight to the store, which checks the checksum it was signed with; every read checks the hash
    again, see the next test.)"""
    digest = BlobStore.digest(b"honest")
    token = local.access.upload_target("p0", NET, "block0", digest).token
    with pytest.raises(grpc.RpcError) as info:
        local.stub().PutBlob(iter([storage_pb2.BlobUpload(digest=digest, token=token, pnode="p0", data=b"forged")]),
                             timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "do not hash" in (info.value.details() or "")
    assert not local.blobs.has_blob(digest)


def test_a_corrupted_blob_is_refused_on_read(service: Service) -> None:
    client = service.pnode("p0")
    digest = client.put(b"parameters")
    service.checkpoint(1, {"block0": digest})
    service.blobs.objects.put(f"blobs/{digest}", b"bit rot!!!")
    with pytest.raises(DataLoss):  # refused by the store, or by the PNode's own check of a pre-signed read
        client.get(digest)


@pytest.mark.parametrize("token", ["", "junk", "1.abc", "{past}"])
def test_missing_expired_or_forged_tokens_are_refused(local: Service, token: str) -> None:
    digest = local.blobs.put_blob(b"secret")
    if token == "{past}":
        token = local.access.signer.sign("get", digest, "p0", time.time() - 1)
    stub = local.stub()

    def refused(token: str, pnode: str = "p0") -> None:
        with pytest.raises(grpc.RpcError) as info:
            list(stub.GetBlob(storage_pb2.BlobTargetRequest(digest=digest, token=token, pnode=pnode), timeout=10))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    refused(token)
    refused(TokenSigner().sign("get", digest, "p0", time.time() + 60))  # another orchestrator's key
    refused(local.access.signer.sign("put", digest, "p0", time.time() + 60))  # scoped: a put token cannot read
    refused(local.access.signer.sign("get", digest, "p0", time.time() + 60), pnode="p1")  # handed to p0, not p1


def test_an_upload_token_is_good_only_for_the_pnode_it_was_handed_to(local: Service) -> None:
    digest = BlobStore.digest(b"state")
    token = local.access.upload_target("p0", NET, "block0", digest).token
    with pytest.raises(grpc.RpcError) as info:
        local.stub().PutBlob(iter([storage_pb2.BlobUpload(digest=digest, token=token, pnode="p1", data=b"state")]),
                             timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and not local.blobs.has_blob(digest)
    ack = local.stub().PutBlob(iter([storage_pb2.BlobUpload(digest=digest, token=token, pnode="p0", data=b"state")]),
                               timeout=10)
    assert ack.size == 5 and local.blobs.get_blob(digest) == b"state"
