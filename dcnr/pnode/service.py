"""gRPC services of a PNode: VNode work (`VNodeService`) and administration (`PNodeService`).

Every handler checks the protocol version first, decodes with `dcnr.proto.codec`,
and maps failures to the right status while the server keeps serving:
FAILED_PRECONDITION for another major protocol version, INVALID_ARGUMENT for a
malformed tensor or a value a node rejects, NOT_FOUND for an unknown network or
VNode; gRPC itself answers RESOURCE_EXHAUSTED above the message size limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import torch

from dcnr import __version__
from dcnr.pnode.host import UnknownTarget, VNodeHost
from dcnr.proto import codec
from dcnr.proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from dcnr.proto.version import IncompatibleVersion, check_compatible, version_message
from dcnr.runtime.vnode import RequestId

DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20


@contextmanager
def _statuses(context: grpc.ServicerContext) -> Iterator[None]:
    """Turn our errors into gRPC statuses with one clear message."""
    try:
        yield
    except IncompatibleVersion as exc:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except UnknownTarget as exc:
        context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    except (codec.CodecError, ValueError) as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def _rid(msg: common_pb2.RequestId) -> RequestId:
    return RequestId(int(msg.step), int(msg.micro_batch), msg.kind or "infer")


class VNodeServicer(node_pb2_grpc.VNodeServiceServicer):
    def __init__(self, host: VNodeHost) -> None:
        self.host = host

    def Forward(self, request: node_pb2.HopRequest, context: grpc.ServicerContext) -> node_pb2.HopResponse:
        """Evaluate one input slot of a VNode; outputs come back once every slot has arrived."""
        with _statuses(context):
            check_compatible(request.version)
            value = codec.decode_value(request.value)
            vnode = self.host.vnode(request.request.network, request.vnode)
            if request.slot >= vnode.impl.num_inputs:
                raise ValueError(f"VNode {request.vnode!r} has {vnode.impl.num_inputs} input slot(s), "
                                 f"got slot {request.slot}")
            with torch.no_grad():
                outputs = vnode.receive_input(_rid(request.request), request.slot, value, training=False)
            return node_pb2.HopResponse(outputs=[codec.encode_value(y) for y in outputs or []])
        raise AssertionError("unreachable: abort raises")

    def Health(self, request: common_pb2.HealthRequest, context: grpc.ServicerContext) -> common_pb2.HealthResponse:
        return common_pb2.HealthResponse(status="serving", version=version_message(), software_version=__version__)


class PNodeServicer(node_pb2_grpc.PNodeServiceServicer):
    def __init__(self, host: VNodeHost) -> None:
        self.host = host

    def ListLocalVNodes(self, request: node_pb2.ListLocalVNodesRequest,
                        context: grpc.ServicerContext) -> node_pb2.ListLocalVNodesResponse:
        return node_pb2.ListLocalVNodesResponse(vnodes=[
            node_pb2.LocalVNode(network=net, vnode=v.id, type=v.spec.type, step=v.step)
            for net, v in self.host.local(request.network or None)])

    def DropLocalVNode(self, request: node_pb2.DropLocalVNodeRequest,
                       context: grpc.ServicerContext) -> node_pb2.DropLocalVNodeResponse:
        return node_pb2.DropLocalVNodeResponse(dropped=self.host.drop(request.network, request.vnode))


def serve(host: VNodeHost, address: str = "127.0.0.1:0", threads: int = 4,
          max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[grpc.Server, int]:
    """Start the PNode's gRPC server; returns it and the bound port."""
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pnode-rpc"),
                         options=options)
    node_pb2_grpc.add_VNodeServiceServicer_to_server(VNodeServicer(host), server)
    node_pb2_grpc.add_PNodeServiceServicer_to_server(PNodeServicer(host), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server, port

