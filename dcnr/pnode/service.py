"""gRPC services of a PNode: VNode work (`VNodeService`) and administration (`PNodeService`).

Every handler checks the protocol version first, decodes with `dcnr.proto.codec`,
and maps failures to the right status while the server keeps serving:
FAILED_PRECONDITION for another major protocol version, INVALID_ARGUMENT for a
malformed tensor or a value a node rejects, NOT_FOUND for an unknown network or
VNode; gRPC itself answers RESOURCE_EXHAUSTED above the message size limit.
"""

from __future__ import annotations

from concurrent import futures
from contextlib import AbstractContextManager
from typing import Any

import grpc
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dcnr import __version__
from dcnr.pnode.host import BudgetExceeded, UnknownTarget
from dcnr.pnode.runtime import PNodeRuntime, request_key
from dcnr.proto import codec
from dcnr.proto.status import StatusTable, statuses
from dcnr.proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from dcnr.proto.version import IncompatibleVersion, check_compatible, version_message
from dcnr.storage import IntegrityError

DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20


class Unavailable(RuntimeError):
    """This PNode cannot do that now (answered as UNAVAILABLE)."""


STATUSES: StatusTable = (
    (IncompatibleVersion, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (IntegrityError, grpc.StatusCode.DATA_LOSS),
    (UnknownTarget, grpc.StatusCode.NOT_FOUND),
    (BudgetExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),  # codec errors included
)


def _statuses(context: grpc.ServicerContext) -> AbstractContextManager[None]:
    return statuses(context, STATUSES)


class VNodeServicer(node_pb2_grpc.VNodeServiceServicer):
    """VNode work. Handlers check, decode and enqueue; the compute thread does the work."""

    def __init__(self, runtime: PNodeRuntime) -> None:
        self.runtime = runtime

    def Forward(self, request: node_pb2.HopRequest, context: grpc.ServicerContext) -> node_pb2.HopResponse:
        """Evaluate one input slot of a VNode (no training); outputs come back once every slot has arrived."""
        with _statuses(context):
            check_compatible(request.version)
            self.runtime.check_hop(request.request, request.vnode, "fwd", request.slot)
            value = codec.decode_value(request.value)
            rid = request_key(request.request)
            if rid.kind == "train":
                raise ValueError("Forward evaluates without training; send training hops with ReceiveTrainRequest")

            def run() -> list[Any] | None:
                vnode = self.runtime.host.vnode(request.request.network, request.vnode)
                with torch.no_grad():
                    return vnode.receive_input(rid, request.slot, value, training=False)

            outputs = self.runtime.call(run)
            return node_pb2.HopResponse(outputs=[codec.encode_value(y) for y in outputs or []])
        raise AssertionError("unreachable: abort raises")

    def ReceiveTrainRequest(self, request: node_pb2.HopRequest, context: grpc.ServicerContext) -> node_pb2.HopAck:
        """An asynchronous forward hop: queued, acknowledged at once."""
        with _statuses(context):
            check_compatible(request.version)
            self.runtime.check_hop(request.request, request.vnode, "fwd", request.slot)
            value = codec.decode_value(request.value)
            fresh = self.runtime.submit("fwd", request.request, request.vnode, request.slot, value)
            return node_pb2.HopAck(accepted=fresh, duplicate=not fresh)
        raise AssertionError("unreachable: abort raises")

    def ReceiveTrainResponse(self, request: node_pb2.GradientHop, context: grpc.ServicerContext) -> node_pb2.HopAck:
        """An asynchronous backward hop: the gradient of one output edge, queued."""
        with _statuses(context):
            check_compatible(request.version)
            self.runtime.check_hop(request.request, request.vnode, "bwd", request.edge)
            if request.request.kind != "train":
                raise ValueError(f"gradients belong to training requests, got kind {request.request.kind!r}")
            grad = codec.decode_tensor(request.gradient) if request.has_gradient else None
            fresh = self.runtime.submit("bwd", request.request, request.vnode, request.edge, grad)
            return node_pb2.HopAck(accepted=fresh, duplicate=not fresh)
        raise AssertionError("unreachable: abort raises")

    def Update(self, request: node_pb2.UpdateRequest, context: grpc.ServicerContext) -> node_pb2.UpdateResponse:
        """Apply (or skip) every hosted VNode's optimizer for the finished step."""
        with _statuses(context):
            self.runtime.view(request.network)
            finite, lrs = self.runtime.call(lambda: self.runtime.update(
                request.network, request.loss_scale or 1.0, request.apply, request.check_only, request.step,
                request.abandon, request.run))
            return node_pb2.UpdateResponse(finite=finite, step=request.step, learning_rates=lrs)
        raise AssertionError("unreachable: abort raises")

    def Save(self, request: node_pb2.SaveRequest, context: grpc.ServicerContext) -> node_pb2.SaveResponse:
        """A VNode's parameters (fp32 masters it owns) and optimizer state, in the reply or as a stored blob."""
        with _statuses(context):
            self.runtime.check_hop(common_pb2.RequestId(network=request.network, kind="infer"), request.vnode,
                                   "save", 0)

            def run() -> tuple[dict[str, torch.Tensor], int]:
                v = self.runtime.host.vnode(request.network, request.vnode)
                tensors = {f"param/{p}": v.params[p].master.detach().clone() for p in v.owned}
                tensors.update({f"optim/{k}": t.detach().clone() for k, t in v.optimizer_state().items()})
                return tensors, v.step

            tensors, step = self.runtime.call(run)  # a snapshot between two computations
            if request.to_storage:
                if self.runtime.blobs is None:
                    raise Unavailable("this PNode has no checkpoint storage")
                data = bytes(save_safetensors({k: t.contiguous() for k, t in tensors.items()}))
                return node_pb2.SaveResponse(step=step, digest=self.runtime.blobs.put(data), size=len(data))
            return node_pb2.SaveResponse(step=step, tensors=[
                common_pb2.NamedTensor(name=k, tensor=codec.encode_tensor(t)) for k, t in sorted(tensors.items())])
        raise AssertionError("unreachable: abort raises")

    def Load(self, request: node_pb2.LoadRequest, context: grpc.ServicerContext) -> node_pb2.LoadResponse:
        """Replace a VNode's parameters and optimizer state with what `Save` returned."""
        with _statuses(context):
            self.runtime.check_hop(common_pb2.RequestId(network=request.network, kind="infer"), request.vnode,
                                   "load", 0)
            if request.digest:
                if self.runtime.blobs is None:
                    raise Unavailable("this PNode has no checkpoint storage")
                tensors = load_safetensors(self.runtime.blobs.get(request.digest))
            else:
                tensors = {t.name: codec.decode_tensor(t.tensor) for t in request.tensors}

            def run() -> None:
                self.runtime.host.vnode(request.network, request.vnode).load_state(tensors, int(request.step))
                host = self.runtime.host  # the network is at this step: VNodes here now and those built later
                host.set_step(request.network, int(request.step))
                for _, other in host.local(request.network):
                    other.step = int(request.step)

            self.runtime.call(run)
            return node_pb2.LoadResponse(loaded=True)
        raise AssertionError("unreachable: abort raises")

    def Health(self, request: common_pb2.HealthRequest, context: grpc.ServicerContext) -> common_pb2.HealthResponse:
        return common_pb2.HealthResponse(status="serving", version=version_message(), software_version=__version__)


class PNodeServicer(node_pb2_grpc.PNodeServiceServicer):
    def __init__(self, runtime: PNodeRuntime) -> None:
        self.runtime = runtime

    def _local(self, network: str) -> list[node_pb2.LocalVNode]:
        host = self.runtime.host
        return [node_pb2.LocalVNode(network=net, vnode=v.id, type=v.spec.type, step=v.step,
                                    memory_bytes=host.memory_of(net, v.id))
                for net, v in host.local(network or None)]

    def ListLocalVNodes(self, request: node_pb2.ListLocalVNodesRequest,
                        context: grpc.ServicerContext) -> node_pb2.ListLocalVNodesResponse:
        return node_pb2.ListLocalVNodesResponse(vnodes=self._local(request.network))

    def InspectNetwork(self, request: node_pb2.InspectLocalRequest,
                       context: grpc.ServicerContext) -> node_pb2.InspectLocalResponse:
        return node_pb2.InspectLocalResponse(vnodes=self._local(request.network))

    def DropLocalVNode(self, request: node_pb2.DropLocalVNodeRequest,
                       context: grpc.ServicerContext) -> node_pb2.DropLocalVNodeResponse:
        """Drop one VNode, or (no VNode named) the whole network with its cached definition."""
        if not request.vnode:
            dropped = self.runtime.call(lambda: self.runtime.forget_network(request.network))
            return node_pb2.DropLocalVNodeResponse(dropped=bool(dropped))
        return node_pb2.DropLocalVNodeResponse(
            dropped=self.runtime.call(lambda: self.runtime.host.drop(request.network, request.vnode)))


def serve(runtime: PNodeRuntime, address: str = "127.0.0.1:0", threads: int = 8,
          max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[grpc.Server, int]:
    """Start the PNode's gRPC server; returns it and the bound port."""
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pnode-rpc"),
                         options=options)
    node_pb2_grpc.add_VNodeServiceServicer_to_server(VNodeServicer(runtime), server)
    node_pb2_grpc.add_PNodeServiceServicer_to_server(PNodeServicer(runtime), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server, port
