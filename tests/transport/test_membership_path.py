"""Open streams can never starve membership: streams are bounded, and enrolment, registrations and
heartbeats are answered while every stream slot of the public port is taken (membership is served on
the peer port, with threads of its own)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tls_helpers import to_orchestrator

from dcnr.data.vocab import train_vocabulary
from dcnr.orchestrator.app import Orchestrator
from dcnr.proto.v2 import node_pb2, node_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from dcnr.security import pki
from dcnr.security.config import ClientConfig
from dcnr.transport.grpc.codec import version_message
from dcnr.transport.grpc.link import enroll
from dcnr.transport.grpc.security import Identity
from dcnr.transport.grpc.server import RESERVED_THREADS

TIMEOUT = 30


def test_streams_beyond_the_limit_are_refused_and_membership_is_still_answered(tmp_path: Path) -> None:
    orch = Orchestrator(tmp_path / "state")
    port = orch.start("127.0.0.1:0", threads=RESERVED_THREADS + 2)  # room for 2 streams
    channel = to_orchestrator(f"127.0.0.1:{port}", orch.ca.cert_pem, token=ClientConfig.load(orch.admin_config).token)
    key = ec.generate_private_key(ec.SECP256R1())
    release = threading.Event()
    pool = ThreadPoolExecutor(2)
    try:
        control = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        tok = train_vocabulary([f"some text {i}" for i in range(50)], 300)
        control.CreateVocabulary(orchestrator_pb2.CreateVocabularyRequest(name="v", tokenizer_json=tok.to_str()),
                                 timeout=TIMEOUT)

        def slow_upload(name: str) -> Iterator[orchestrator_pb2.DatasetUpload]:
            """An upload whose sender goes quiet: it holds its stream (and a server thread) open."""
            yield orchestrator_pb2.DatasetUpload(name=name, vocabulary="v", text="the start")
            release.wait(TIMEOUT)

        uploads = [pool.submit(control.CreateDataset, slow_upload(f"d{i}"), timeout=TIMEOUT) for i in range(2)]
        deadline = time.monotonic() + TIMEOUT
        while True:  # until both uploads hold their slots: then a third stream is refused
            try:
                list(control.ListenTrainSession(orchestrator_pb2.SessionRef(id="none"), timeout=TIMEOUT))
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert "at most 2 such streams" in (exc.details() or "")
                    break
                assert exc.code() == grpc.StatusCode.NOT_FOUND  # a slot was still free
            assert time.monotonic() < deadline, "the uploads never held their stream slots"
            time.sleep(0.05)
        pid, cert, peer_port = enroll(f"127.0.0.1:{port}", orch.ca.cert_pem, pki.certificate_request(key))
        identity = Identity(pki.Credentials(pki.key_pem(key), cert, orch.ca.cert_pem))
        with to_orchestrator(f"127.0.0.1:{peer_port}", orch.ca.cert_pem, identity) as peer:
            nodes = node_pb2_grpc.NodeManagementServiceStub(peer)
            reply = nodes.RegisterPNode(node_pb2.RegisterPNodeRequest(
                id=pid, version=version_message(), address="127.0.0.1:1"), timeout=30)
            assert reply.unreachable and "127.0.0.1:1" in reply.detail  # answered, after probing the address
            relay = nodes.AssignRelay(node_pb2.AssignRelayRequest(id=pid), timeout=10)
            assert relay.address == f":{orch.relay_port}"  # the orchestrator's own: no relay process runs
        release.set()
        for f in uploads:
            assert f.result(timeout=TIMEOUT).tokens > 0  # the held uploads finish normally
        with pytest.raises(grpc.RpcError) as info:  # and their slots are free again
            list(control.ListenTrainSession(orchestrator_pb2.SessionRef(id="none"), timeout=TIMEOUT))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        release.set()
        pool.shutdown(wait=True)
        channel.close()
        orch.stop(grace=0.5)


def test_an_orchestrator_needs_more_threads_than_it_reserves(tmp_path: Path) -> None:
    orch = Orchestrator(tmp_path / "state")
    try:
        with pytest.raises(ValueError, match="more than"):
            orch.start("127.0.0.1:0", threads=RESERVED_THREADS)
    finally:
        orch.stop(grace=0)
