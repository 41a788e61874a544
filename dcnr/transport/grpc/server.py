"""The orchestrator's gRPC server: its three services on one port, each servicer wrapped once
with `guarded`, message sizes capped at the orchestrator's limit."""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from dcnr.orchestrator.driver import Members
from dcnr.proto.v2 import node_pb2_grpc, orchestrator_pb2_grpc, storage_pb2_grpc
from dcnr.transport.grpc.errors import guarded, protocol_v1_refusal
from dcnr.transport.grpc.node_management import NodeManagementServicer
from dcnr.transport.grpc.orchestrator_service import OrchestratorServicer
from dcnr.transport.grpc.storage_service import StorageServicer

if TYPE_CHECKING:
    from dcnr.orchestrator.app import Orchestrator


class OrchestratorServer:
    """Serving `orch` on `address` from construction until `stop`; `port` is the port it listens on."""

    def __init__(self, orch: Orchestrator, address: str, threads: int = 32) -> None:
        limit = orch.max_message_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="orch-rpc"),
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)])
        control = guarded(OrchestratorServicer(orch))  # guarded: the one place errors become statuses
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
