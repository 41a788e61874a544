"""Open streams can never starve membership: streams are bounded, and registrations and heartbeats
are answered while every stream slot is taken."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from dcnr.data.vocab import train_vocabulary
from dcnr.orchestrator.app import Orchestrator
from dcnr.proto.v2 import node_pb2, node_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from dcnr.transport.grpc.codec import version_message
from dcnr.transport.grpc.server import RESERVED_THREADS

TIMEOUT = 30


def test_streams_beyond_the_limit_are_refused_and_membership_is_still_answered(tmp_path: Path) -> None:
    orch = Orchestrator(tmp_path / "state")
    port = orch.start("127.0.0.1:0", threads=RESERVED_THREADS + 2)  # room for 2 streams
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    release = threading.Event()
    pool = ThreadPoolExecutor(2)
    try:
        control = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        nodes = node_pb2_grpc.NodeManagementServiceStub(channel)
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
                    assert "at most 2 streams" in (exc.details() or "")
                    break
                assert exc.code() == grpc.StatusCode.NOT_FOUND  # a slot was still free
            assert time.monotonic() < deadline, "the uploads never held their stream slots"
            time.sleep(0.05)
        reply = nodes.RegisterPNode(node_pb2.RegisterPNodeRequest(
            id="p0", version=version_message(), address="127.0.0.1:1"), timeout=10)
        assert reply.heartbeat_interval_ms > 0
        assert nodes.HeartbeatPNode(node_pb2.HeartbeatRequest(id="p0"), timeout=10).known
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
