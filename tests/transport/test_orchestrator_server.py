"""The orchestrator's gRPC server: every RPC of every service goes through `guarded` and nothing
else handles errors; a bug in a handler is INTERNAL and the server goes on serving."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass
from tls_helpers import pnode_identity, to_orchestrator

from dcnr.errors import Unavailable
from dcnr.orchestrator.app import Orchestrator
from dcnr.proto.v2 import common_pb2, node_pb2, orchestrator_pb2, orchestrator_pb2_grpc, storage_pb2
from dcnr.security.config import ClientConfig

TIMEOUT = 20  # seconds, on every call
PROTOS: dict[str, ModuleType] = {"OrchestratorService": orchestrator_pb2, "NodeManagementService": node_pb2,
                                 "StorageService": storage_pb2}
# what handling errors by hand looks like; none of it belongs in a servicer
BY_HAND = ("try:", "except", "abort(", "set_code(", "set_details(", "StatusCode")


@pytest.fixture()
def orch(tmp_path: Path) -> Iterator[Orchestrator]:
    o = Orchestrator(tmp_path / "state")
    o.start("127.0.0.1:0", threads=12)
    yield o
    o.stop(grace=0.5)


def operator(orch: Orchestrator) -> grpc.Channel:
    return to_orchestrator(f"127.0.0.1:{orch.port}", orch.ca.cert_pem, token=ClientConfig.load(orch.admin_config).token)


def as_pnode(orch: Orchestrator) -> grpc.Channel:
    """The peer port, as a PNode with a certificate of this orchestrator."""
    return to_orchestrator(f"127.0.0.1:{orch.peer_port}", orch.ca.cert_pem, pnode_identity(orch.ca)[1])


@pytest.fixture()
def control(orch: Orchestrator) -> Iterator[orchestrator_pb2_grpc.OrchestratorServiceStub]:
    with operator(orch) as channel:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)


class Down:
    """Stands in for the orchestrator's services: whatever a handler asks of it fails with one of our errors."""

    def __getattr__(self, name: str) -> None:
        raise Unavailable(f"{name} is down")


def invoke(channel: grpc.Channel, service: str, method: Any) -> None:
    """Call one RPC with an empty request (a stream of none for a streamed request), reading every answer."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request = GetMessageClass(method.input_type)()
    if method.client_streaming:
        channel.stream_unary(path, request_serializer=type(request).SerializeToString)(iter(()), timeout=TIMEOUT)
    elif method.server_streaming:
        list(channel.unary_stream(path, request_serializer=type(request).SerializeToString)(request, timeout=TIMEOUT))
    else:
        channel.unary_unary(path, request_serializer=type(request).SerializeToString)(request, timeout=TIMEOUT)


def test_every_rpc_of_every_service_is_guarded_and_handles_no_error_itself(
        orch: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
    """With its services down, every RPC but Health fails with the status of our error (an unguarded handler
    would give UNKNOWN), or earlier with one for the empty request; no servicer handles an error itself."""
    assert orch.server is not None
    assert set(orch.server.servicers) == set(PROTOS)
    answered = []
    with operator(orch) as public, as_pnode(orch) as peer:
        for service, servicer in orch.server.servicers.items():
            channel = public if service == "OrchestratorService" else peer
            cls = type(servicer)
            source = inspect.getsource(inspect.getmodule(cls))  # type: ignore[arg-type]
            assert not [s for s in BY_HAND if s in source], f"{cls.__name__}: errors are handled only by `guarded`"
            for name in [n for n in vars(servicer) if not n[:1].isupper()]:  # what it serves: `o`, `access`
                monkeypatch.setattr(servicer, name, Down())
            for method in PROTOS[service].DESCRIPTOR.services_by_name[service].methods:
                assert method.name in vars(cls), f"{service}.{method.name} is not implemented"
                try:
                    invoke(channel, service, method)
                except grpc.RpcError as exc:
                    code, details = exc.code(), exc.details()
                    if code == grpc.StatusCode.UNAVAILABLE:
                        assert details.endswith(" is down"), f"{service}.{method.name}: {details}"
                    else:  # refused before the services were asked: a missing version, an empty upload, an id
                        # that is not the caller's
                        assert code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
                                        grpc.StatusCode.PERMISSION_DENIED), \
                            f"{service}.{method.name}: {code.name}: {details}"
                    continue
                answered.append(f"{service}.{method.name}")
    assert answered == ["OrchestratorService.Health"]


def test_a_bug_in_a_handler_is_internal_and_the_orchestrator_goes_on(
        orch: Orchestrator, control: orchestrator_pb2_grpc.OrchestratorServiceStub,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(orch.networks, "info", broken)
    with pytest.raises(grpc.RpcError) as info:
        control.GetNetwork(orchestrator_pb2.NetworkRef(name="any"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error: ZeroDivisionError: a bug"
    assert control.Health(common_pb2.HealthRequest(), timeout=TIMEOUT).status == "serving"
    monkeypatch.undo()
    with pytest.raises(grpc.RpcError) as info:
        control.GetNetwork(orchestrator_pb2.NetworkRef(name="any"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details() == "unknown network 'any'"
