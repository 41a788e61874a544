"""The orchestrator's gRPC server: its three services on one port, each servicer wrapped once
with `guarded`, message sizes capped at the orchestrator's limit, streams bounded so that
membership is always served."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from dcnr.orchestrator.driver import Members
from dcnr.proto.v2 import node_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, storage_pb2_grpc
from dcnr.transport.grpc.errors import guarded, protocol_v1_refusal
from dcnr.transport.grpc.node_management import NodeManagementServicer
from dcnr.transport.grpc.orchestrator_service import OrchestratorServicer
from dcnr.transport.grpc.storage_service import StorageServicer

if TYPE_CHECKING:
    from dcnr.orchestrator.app import Orchestrator


RESERVED_THREADS = 8  # of the server's threads, never taken by streams: membership and short calls


class OrchestratorServer:
    """Serving `orch` on `address` from construction until `stop`; `port` is the port it listens on.

    A streaming call (listening to a session, chat, uploads and downloads) holds a server thread for
    as long as it lasts, so at most `threads - RESERVED_THREADS` run at once; more are refused with
    RESOURCE_EXHAUSTED. The reserved threads keep registrations and heartbeats answered, so idle
    listeners can never make the fleet look dead.
    """

    def __init__(self, orch: Orchestrator, address: str, threads: int = 32) -> None:
        if threads <= RESERVED_THREADS:
            raise ValueError(f"the orchestrator needs more than {RESERVED_THREADS} server threads, got {threads}")
        limit = orch.max_message_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="orch-rpc"),
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)])
        control = guarded(OrchestratorServicer(orch))  # guarded: the one place errors become statuses
        limit_streams(control, threading.BoundedSemaphore(threads - RESERVED_THREADS), threads - RESERVED_THREADS)
        nodes = guarded(NodeManagementServicer(Members(orch.fleet, orch.inbox)))
        storage = guarded(StorageServicer(orch.blob_access))
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(control, self._server)
        node_pb2_grpc.add_NodeManagementServiceServicer_to_server(nodes, self._server)
        storage_pb2_grpc.add_StorageServiceServicer_to_server(storage, self._server)
        self._server.add_generic_rpc_handlers((protocol_v1_refusal(),))  # protocol-1 PNodes hear why
        self.servicers: dict[str, Any] = {  # by service name
            "OrchestratorService": control, "NodeManagementService": nodes, "StorageService": storage}
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        self._server.start()

    def stop(self, grace: float | None) -> None:
        """Refuse new calls, give running ones `grace` seconds, then end them."""
        self._server.stop(grace).wait()


def limit_streams(servicer: Any, slots: threading.BoundedSemaphore, count: int) -> None:
    """Wrap the servicer's streaming RPCs so that at most `count` run at once (RESOURCE_EXHAUSTED beyond)."""
    service = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"]
    for method in service.methods:
        if not (method.client_streaming or method.server_streaming):
            continue
        handler = getattr(servicer, method.name)
        setattr(servicer, method.name, (_limited_stream if method.server_streaming else _limited_call)(
            handler, slots, count))


def _refuse(context: grpc.ServicerContext, count: int) -> None:
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                  f"this orchestrator serves at most {count} streams at once; try again later")


def _limited_stream(handler: Callable[..., Iterator[Any]], slots: threading.BoundedSemaphore,
                    count: int) -> Callable[..., Iterator[Any]]:
    @functools.wraps(handler)
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if not slots.acquire(blocking=False):
            _refuse(context, count)
        try:
            yield from handler(request, context)
        finally:
            slots.release()
    return wrapper


def _limited_call(handler: Callable[..., Any], slots: threading.BoundedSemaphore, count: int) -> Callable[..., Any]:
    @functools.wraps(handler)
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        if not slots.acquire(blocking=False):
            _refuse(context, count)
        try:
            return handler(request, context)
        finally:
            slots.release()
    return wrapper
