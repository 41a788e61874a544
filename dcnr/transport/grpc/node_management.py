"""`NodeManagementService` over gRPC: PNodes joining, heartbeating, leaving, finding VNodes and
reporting progress, mapped to the orchestrator's fleet, driver and inbox.

Errors are not handled here: the server wraps this servicer once with `guarded`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from dcnr.orchestrator.fleet import hardware_dict
from dcnr.proto.v1 import node_pb2, node_pb2_grpc
from dcnr.proto.version import check_compatible, version_message

if TYPE_CHECKING:
    from dcnr.orchestrator.app import Orchestrator


class NodeManagementServicer(node_pb2_grpc.NodeManagementServiceServicer):
    def __init__(self, orch: Orchestrator) -> None:
        self.o = orch

    def RegisterPNode(self, request: node_pb2.RegisterPNodeRequest,
                      context: grpc.ServicerContext) -> node_pb2.RegisterPNodeResponse:
        check_compatible(request.version)
        v = request.version
        self.o.fleet.register(request.id, request.address, hardware_dict(request.hardware),
                              f"{v.major}.{v.minor}.{v.patch}")
        return node_pb2.RegisterPNodeResponse(
            heartbeat_interval_ms=int(self.o.fleet.heartbeat_interval * 1000), version=version_message())

    def UnregisterPNode(self, request: node_pb2.PNodeRef,
                        context: grpc.ServicerContext) -> node_pb2.UnregisterPNodeResponse:
        return node_pb2.UnregisterPNodeResponse(removed=self.o.fleet.unregister(request.id))

    def HeartbeatPNode(self, request: node_pb2.HeartbeatRequest,
                       context: grpc.ServicerContext) -> node_pb2.HeartbeatResponse:
        self.o.fleet.heartbeat(request.id, request.load)
        return node_pb2.HeartbeatResponse(known=True)

    def GetVNodeLocation(self, request: node_pb2.VNodeLocationRequest,
                         context: grpc.ServicerContext) -> node_pb2.VNodeLocation:
        if request.refresh:
            self.o.fleet.sweep()
        spec = self.o.driver.network(request.network).spec
        pnode, address = self.o.fleet.locate(spec, request.vnode)
        return node_pb2.VNodeLocation(network=request.network, vnode=request.vnode, pnode=pnode, address=address)

    def ReportProgress(self, request: node_pb2.ProgressReport,
                       context: grpc.ServicerContext) -> node_pb2.ProgressAck:
        check_compatible(request.version)
        self.o.inbox.deliver(request.events)
        return node_pb2.ProgressAck(known=True)
