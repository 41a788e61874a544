"""gRPC for PNodes: the services a PNode serves, and the clients that reach them.

- `VNodeServicer` / `PNodeServicer` map `dcnr.v2` messages to `PNodeRuntime` calls and
  back (each call checked once by `secured`, errors become statuses once through `guarded`);
  `serve_pnode` starts them behind mutual TLS; a hop's sender is the caller's certificate;
- `GrpcPNodeClient` is the orchestrator's `PNodeClient`, `GrpcHopTransport` the
  `HopTransport` of PNodes and of the driver, `GrpcConnector` hands both out by address.

Hops are serialized once, by us, so the bytes that travel are counted without a second
serialization (`GrpcHopTransport.bytes_sent`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
import torch

from dcnr import __version__
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.proto.v2 import common_pb2, node_pb2, node_pb2_grpc
from dcnr.security.authorization import ORCHESTRATOR
from dcnr.security.pki import PNODE_TLS_NAME
from dcnr.transport.grpc import codec
from dcnr.transport.grpc.errors import from_rpc_error, guarded
from dcnr.transport.grpc.security import Authority, ChannelPool, Identity, add_tls_port, current_caller, secured
from dcnr.transport.interfaces import SavedState
from dcnr.transport.messages import (
    Commitment,
    Evidence,
    Hop,
    LocalVNode,
    Placement,
    Received,
    Replay,
    Run,
    StepTiming,
    TimedHop,
    TimedWork,
    Updated,
)

DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20
VNODE_SERVICE = node_pb2.DESCRIPTOR.services_by_name["VNodeService"].full_name
PNODE_SERVICE = node_pb2.DESCRIPTOR.services_by_name["PNodeService"].full_name


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


# -- messages ------------------------------------------------------------------------------------
def run_to_pb(run: Run) -> common_pb2.Run:
    return common_pb2.Run(network=run.network, id=run.id, step=run.step, kind=run.kind,
                          micro_batches=run.micro_batches, grad_scale=run.grad_scale, outputs=list(run.outputs),
                          digest=run.digest, placement_version=run.placement_version, commit=run.commit)


def run_from_pb(msg: common_pb2.Run) -> Run:
    kind: Any = msg.kind  # checked by the runtime
    return Run(msg.network, msg.id, int(msg.step), kind, int(msg.micro_batches), float(msg.grad_scale),
               tuple(msg.outputs), msg.digest, int(msg.placement_version), bool(msg.commit))


def hop_to_pb(hop: Hop) -> node_pb2.HopRequest | node_pb2.GradientHop:
    if hop.op == "fwd":
        return node_pb2.HopRequest(network=hop.network, run=hop.run, micro_batch=hop.micro_batch, vnode=hop.vnode,
                                   slot=hop.index, value=codec.encode_value(hop.value), signature=hop.signature)
    msg = node_pb2.GradientHop(network=hop.network, run=hop.run, micro_batch=hop.micro_batch, vnode=hop.vnode,
                               edge=hop.index, has_gradient=hop.value is not None, signature=hop.signature)
    if hop.value is not None:
        msg.gradient.CopyFrom(codec.encode_tensor(hop.value))
    return msg


def hop_to_bytes(hop: Hop) -> bytes:
    return hop_to_pb(hop).SerializeToString()


def forward_hop(msg: node_pb2.HopRequest, sender: str = "") -> Hop:
    return Hop(msg.network, msg.run, int(msg.micro_batch), "fwd", msg.vnode, int(msg.slot),
               codec.decode_value(msg.value), sender, msg.signature)


def backward_hop(msg: node_pb2.GradientHop, sender: str = "") -> Hop:
    grad = codec.decode_tensor(msg.gradient) if msg.has_gradient else None
    return Hop(msg.network, msg.run, int(msg.micro_batch), "bwd", msg.vnode, int(msg.edge), grad, sender,
               msg.signature)


def commitment_to_pb(c: Commitment) -> node_pb2.Commitment:
    return node_pb2.Commitment(vnode=c.vnode, state=c.state, sent=c.sent, grad_norm=c.grad_norm, received={
        k: node_pb2.ReceivedHop(digest=r.digest, sender=r.sender, signature=r.signature)
        for k, r in c.received.items()})


def commitment_from_pb(msg: node_pb2.Commitment) -> Commitment:
    return Commitment(msg.vnode, msg.state, dict(msg.sent), {
        k: Received(r.digest, r.sender, r.signature) for k, r in msg.received.items()}, float(msg.grad_norm))


def evidence_to_pb(e: Evidence) -> node_pb2.Evidence:
    msg = node_pb2.Evidence(states=[node_pb2.VNodeState(vnode=v, tensors=[
        common_pb2.NamedTensor(name=k, tensor=codec.encode_tensor(t)) for k, t in sorted(tensors.items())])
        for v, tensors in sorted(e.state.items())])
    for hop in e.inputs:
        pb = hop_to_pb(hop)
        (msg.inputs if hop.op == "fwd" else msg.gradients).append(pb)  # type: ignore[arg-type]
    for hop in e.outputs:
        pb = hop_to_pb(hop)
        (msg.sent_inputs if hop.op == "fwd" else msg.sent_gradients).append(pb)  # type: ignore[arg-type]
    return msg


def evidence_from_pb(msg: node_pb2.Evidence) -> Evidence:
    return Evidence({s.vnode: {t.name: codec.decode_tensor(t.tensor) for t in s.tensors} for s in msg.states},
                    [forward_hop(h) for h in msg.inputs] + [backward_hop(h) for h in msg.gradients],
                    [forward_hop(h) for h in msg.sent_inputs] + [backward_hop(h) for h in msg.sent_gradients])


def replay_to_pb(unit: Replay) -> node_pb2.VerifyRequest:
    return node_pb2.VerifyRequest(version=codec.version_message(), network=unit.network, yaml=unit.yaml,
                                  seed=unit.seed, vocabularies=unit.vocabularies, vnodes=list(unit.vnodes),
                                  run=run_to_pb(unit.run), loss_scale=unit.loss_scale, apply=unit.apply,
                                  evidence=evidence_to_pb(unit.evidence), tolerance=unit.tolerance)


def replay_from_pb(msg: node_pb2.VerifyRequest) -> Replay:
    return Replay(msg.network, msg.yaml, int(msg.seed), dict(msg.vocabularies), tuple(msg.vnodes),
                  run_from_pb(msg.run), float(msg.loss_scale), bool(msg.apply), evidence_from_pb(msg.evidence),
                  float(msg.tolerance))


def placement_to_pb(p: Placement) -> node_pb2.PlaceNetworkRequest:
    return node_pb2.PlaceNetworkRequest(
        version=codec.version_message(), network=p.network, yaml=p.yaml, seed=p.seed, digest=p.digest,
        placement_version=p.version, step=p.step, assignments=p.assignments, addresses=p.addresses,
        vocabularies=p.vocabularies, keys=p.keys)


def placement_from_pb(msg: node_pb2.PlaceNetworkRequest) -> Placement:
    return Placement(msg.network, msg.yaml, int(msg.seed), msg.digest, int(msg.placement_version), int(msg.step),
                     dict(msg.assignments), dict(msg.addresses), dict(msg.vocabularies), dict(msg.keys))


_WORK_OPS: tuple[Any, ...] = ("fwd", "bwd", "update")


def timing_to_pb(t: StepTiming) -> node_pb2.StepTiming:
    """A step's timing, every VNode and PNode named once (records refer to `names` by index)."""
    names: dict[str, int] = {}

    def name(text: str) -> int:
        return names.setdefault(text, len(names))

    def hop(h: TimedHop) -> node_pb2.TimedHop:
        return node_pb2.TimedHop(vnode=name(h.vnode), backward=h.op == "bwd", micro_batch=h.micro_batch,
                                 index=h.index, at=h.at, bytes=h.bytes, peer=name(h.peer))

    work = [node_pb2.TimedWork(vnode=name(w.vnode), op=_WORK_OPS.index(w.op), micro_batch=w.micro_batch,
                               start=w.start, end=w.end) for w in t.work]
    sent, received = [hop(h) for h in t.sent], [hop(h) for h in t.received]
    return node_pb2.StepTiming(run=t.run, names=list(names), work=work, sent=sent, received=received,
                               truncated=t.truncated)


def timing_from_pb(msg: node_pb2.StepTiming) -> StepTiming | None:
    """The inverse of `timing_to_pb` (None for an empty message); a record naming no name or no operation is
    left out (the timing comes from a peer: `dcnr.orchestrator.timeline` checks the rest)."""
    if not msg.run:
        return None
    names = list(msg.names)

    def named(i: int) -> str | None:
        return names[i] if i < len(names) else None

    work = tuple(TimedWork(v, _WORK_OPS[w.op], int(w.micro_batch), float(w.start), float(w.end)) for w in msg.work
                 if (v := named(w.vnode)) is not None and w.op < len(_WORK_OPS))

    def hops(records: Any) -> tuple[TimedHop, ...]:
        return tuple(TimedHop(v, "bwd" if h.backward else "fwd", int(h.micro_batch), int(h.index), float(h.at),
                              int(h.bytes), named(h.peer) or "") for h in records if (v := named(h.vnode)) is not None)

    return StepTiming(msg.run, work, hops(msg.sent), hops(msg.received), bool(msg.truncated))


def _local_pb(v: LocalVNode) -> node_pb2.LocalVNode:
    return node_pb2.LocalVNode(network=v.network, vnode=v.vnode, type=v.type, step=v.step,
                               memory_bytes=v.memory_bytes)


# -- servers -------------------------------------------------------------------------------------
def _sender() -> str:
    """Who sent a hop, from the caller's certificate: a PNode's id, or "" for the orchestrator."""
    caller = current_caller()
    return "" if caller.role == ORCHESTRATOR else caller.name


class VNodeServicer(node_pb2_grpc.VNodeServiceServicer):
    """The step protocol. Hop handlers check, decode and enqueue; the compute thread does the work."""

    def __init__(self, runtime: PNodeRuntime) -> None:
        self.runtime = runtime

    def PlaceNetwork(self, request: node_pb2.PlaceNetworkRequest,
                     context: grpc.ServicerContext) -> node_pb2.PlaceNetworkResponse:
        codec.check_version(request.version)
        return node_pb2.PlaceNetworkResponse(hosted=self.runtime.place(placement_from_pb(request)))

    def BeginRun(self, request: node_pb2.BeginRunRequest, context: grpc.ServicerContext) -> node_pb2.BeginRunResponse:
        codec.check_version(request.version)
        self.runtime.begin_run(run_from_pb(request.run))
        return node_pb2.BeginRunResponse()

    def ReceiveTrainRequest(self, request: node_pb2.HopRequest, context: grpc.ServicerContext) -> node_pb2.HopAck:
        """A forward hop: checked, queued, acknowledged at once."""
        fresh = self.runtime.submit(forward_hop(request, _sender()))
        return node_pb2.HopAck(accepted=fresh, duplicate=not fresh)

    def ReceiveTrainResponse(self, request: node_pb2.GradientHop, context: grpc.ServicerContext) -> node_pb2.HopAck:
        """A backward hop: the gradient of one output edge, queued."""
        fresh = self.runtime.submit(backward_hop(request, _sender()))
        return node_pb2.HopAck(accepted=fresh, duplicate=not fresh)

    def CheckFinite(self, request: node_pb2.NetworkStepRequest,
                    context: grpc.ServicerContext) -> node_pb2.CheckFiniteResponse:
        return node_pb2.CheckFiniteResponse(finite=self.runtime.check_finite(request.network))

    def ApplyUpdate(self, request: node_pb2.ApplyUpdateRequest,
                    context: grpc.ServicerContext) -> node_pb2.ApplyUpdateResponse:
        lrs, commitments, timing = self.runtime.update(request.network, int(request.step), request.loss_scale or 1.0,
                                                       request.apply)
        return node_pb2.ApplyUpdateResponse(learning_rates=lrs, commitments=[commitment_to_pb(c) for c in commitments],
                                            timing=timing_to_pb(timing) if timing is not None else None)

    def CollectEvidence(self, request: node_pb2.EvidenceRequest, context: grpc.ServicerContext) -> node_pb2.Evidence:
        return evidence_to_pb(self.runtime.collect_evidence(request.network, request.run, list(request.vnodes)))

    def Verify(self, request: node_pb2.VerifyRequest, context: grpc.ServicerContext) -> node_pb2.VerifyResponse:
        codec.check_version(request.version)
        found = self.runtime.verify(replay_from_pb(request))
        return node_pb2.VerifyResponse(commitments=[commitment_to_pb(c) for _, c in sorted(found.items())])

    def ResetToStep(self, request: node_pb2.ResetToStepRequest,
                    context: grpc.ServicerContext) -> node_pb2.ResetToStepResponse:
        self.runtime.reset_to_step(request.network, int(request.step), request.fence_run, request.reinitialize)
        return node_pb2.ResetToStepResponse()

    def Save(self, request: node_pb2.SaveRequest, context: grpc.ServicerContext) -> node_pb2.SaveResponse:
        """A VNode's state, in the reply or written as a blob through the orchestrator's storage."""
        if request.to_storage:
            digest, size = self.runtime.save_to_storage(request.network, request.vnode)
            return node_pb2.SaveResponse(digest=digest, size=size)
        tensors, step = self.runtime.save(request.network, request.vnode)
        return node_pb2.SaveResponse(step=step, tensors=[
            common_pb2.NamedTensor(name=k, tensor=codec.encode_tensor(t)) for k, t in sorted(tensors.items())])

    def Load(self, request: node_pb2.LoadRequest, context: grpc.ServicerContext) -> node_pb2.LoadResponse:
        """Replace a VNode's state with what `Save` returned, or with a stored blob."""
        if request.digest:
            self.runtime.load_from_storage(request.network, request.vnode, int(request.step), request.digest)
        else:
            tensors = {t.name: codec.decode_tensor(t.tensor) for t in request.tensors}
            self.runtime.load(request.network, request.vnode, tensors, int(request.step))
        return node_pb2.LoadResponse(loaded=True)

    def Health(self, request: common_pb2.HealthRequest, context: grpc.ServicerContext) -> common_pb2.HealthResponse:
        return common_pb2.HealthResponse(status="serving", version=codec.version_message(),
                                         software_version=__version__)


class PNodeServicer(node_pb2_grpc.PNodeServiceServicer):
    """Local administration: what this PNode hosts, and dropping it."""

    def __init__(self, runtime: PNodeRuntime) -> None:
        self.runtime = runtime

    def ListLocalVNodes(self, request: node_pb2.ListLocalVNodesRequest,
                        context: grpc.ServicerContext) -> node_pb2.ListLocalVNodesResponse:
        vnodes = [_local_pb(v) for v in self.runtime.list_vnodes(request.network)]
        return node_pb2.ListLocalVNodesResponse(vnodes=vnodes)

    def InspectNetwork(self, request: node_pb2.InspectLocalRequest,
                       context: grpc.ServicerContext) -> node_pb2.InspectLocalResponse:
        return node_pb2.InspectLocalResponse(vnodes=[_local_pb(v) for v in self.runtime.list_vnodes(request.network)])

    def DropLocalVNode(self, request: node_pb2.DropLocalVNodeRequest,
                       context: grpc.ServicerContext) -> node_pb2.DropLocalVNodeResponse:
        """Drop one VNode, or (no VNode named) the whole network with its placement."""
        return node_pb2.DropLocalVNodeResponse(dropped=self.runtime.drop(request.network, request.vnode))


def pnode_services(runtime: PNodeRuntime) -> Callable[[Any], None]:
    """What adds a PNode's services to a server, each call checked against the authorization table (a server
    of its own, or a relay link that runs the calls a relay forwards)."""
    authority = Authority(relayed=True)  # certificates only; relays deliver hops of the PNodes attached to them
    vnodes = guarded(secured(VNodeServicer(runtime), VNODE_SERVICE, authority))
    admin = guarded(secured(PNodeServicer(runtime), PNODE_SERVICE, authority))

    def register(server: Any) -> None:
        node_pb2_grpc.add_VNodeServiceServicer_to_server(vnodes, server)
        node_pb2_grpc.add_PNodeServiceServicer_to_server(admin, server)
    return register


def serve_pnode(runtime: PNodeRuntime, identity: Identity, address: str = "127.0.0.1:0", threads: int = 8,
                max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[grpc.Server, int]:
    """Start a PNode's gRPC server (mutual TLS: only the orchestrator and PNodes of its CA get in, and
    each call is checked against the authorization table); returns it and the bound port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pnode-rpc"),
                         options=channel_options(max_message_bytes))
    pnode_services(runtime)(server)
    port = add_tls_port(server, address, identity, mutual=True)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server, port


# -- clients -------------------------------------------------------------------------------------
class InFlight:
    """A count of hops sent and not yet acknowledged (thread-safe)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n


def pnode_channels(identity: Identity, max_message_bytes: int) -> ChannelPool:
    """Channels to PNodes (their certificates must name `PNODE_TLS_NAME`), presenting `identity`."""
    return ChannelPool(identity.creds.ca_pem, PNODE_TLS_NAME, channel_options(max_message_bytes), identity)


class GrpcHopTransport:
    """`HopTransport` over gRPC: each hop is serialized once and sent without waiting (`in_flight`: sent and not
    yet acknowledged)."""

    FORWARD = "/dcnr.v2.VNodeService/ReceiveTrainRequest"
    BACKWARD = "/dcnr.v2.VNodeService/ReceiveTrainResponse"

    def __init__(self, channels: ChannelPool, timeout: float = 60.0) -> None:
        self.channels = channels
        self.timeout = timeout
        self.bytes_sent = 0
        self.hops_sent = 0
        self.in_flight = InFlight()

    def _call(self, address: str, hop: Hop) -> tuple[Any, bytes]:
        path = self.FORWARD if hop.op == "fwd" else self.BACKWARD
        data = hop_to_bytes(hop)
        self.bytes_sent += len(data)
        self.hops_sent += 1
        method = self.channels.get(address).unary_unary(path, request_serializer=None,
                                                        response_deserializer=node_pb2.HopAck.FromString)
        return method, data

    def send(self, address: str, hop: Hop, on_error: Callable[[Exception], None]) -> None:
        method, data = self._call(address, hop)
        self.in_flight.add(1)
        future = method.future(data, timeout=self.timeout)

        def done(f: grpc.Future) -> None:
            self.in_flight.add(-1)
            exc = f.exception()
            if exc is not None:
                on_error(from_rpc_error(exc) if isinstance(exc, grpc.RpcError) else exc)

        future.add_done_callback(done)

    def send_now(self, address: str, hop: Hop, timeout: float) -> None:
        method, data = self._call(address, hop)
        try:
            method(data, timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def close(self) -> None:
        self.channels.close()


class GrpcPNodeClient:
    """`PNodeClient` over gRPC; every failure is a `dcnr.errors` class."""

    def __init__(self, channel: grpc.Channel, timeout: float = 600.0) -> None:
        self.vnodes = node_pb2_grpc.VNodeServiceStub(channel)
        self.admin = node_pb2_grpc.PNodeServiceStub(channel)
        self.timeout = timeout

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def place_network(self, placement: Placement) -> int:
        return int(self._call(self.vnodes.PlaceNetwork, placement_to_pb(placement)).hosted)

    def begin_run(self, run: Run) -> None:
        self._call(self.vnodes.BeginRun, node_pb2.BeginRunRequest(version=codec.version_message(),
                                                                  run=run_to_pb(run)))

    def health(self, timeout: float) -> None:
        try:
            self.vnodes.Health(common_pb2.HealthRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def check_finite(self, network: str) -> bool:
        return bool(self._call(self.vnodes.CheckFinite, node_pb2.NetworkStepRequest(network=network)).finite)

    def apply_update(self, network: str, step: int, loss_scale: float, apply: bool) -> Updated:
        reply = self._call(self.vnodes.ApplyUpdate, node_pb2.ApplyUpdateRequest(
            network=network, step=step, loss_scale=loss_scale, apply=apply))
        return Updated(dict(reply.learning_rates), [commitment_from_pb(c) for c in reply.commitments],
                       timing_from_pb(reply.timing) if reply.HasField("timing") else None)

    def collect_evidence(self, network: str, run: str, vnodes: Sequence[str]) -> Evidence:
        return evidence_from_pb(self._call(self.vnodes.CollectEvidence, node_pb2.EvidenceRequest(
            network=network, run=run, vnodes=list(vnodes))))

    def verify(self, unit: Replay) -> dict[str, Commitment]:
        reply = self._call(self.vnodes.Verify, replay_to_pb(unit))
        return {c.vnode: commitment_from_pb(c) for c in reply.commitments}

    def reset_to_step(self, network: str, step: int, fence_run: str = "", reinitialize: bool = False) -> None:
        self._call(self.vnodes.ResetToStep, node_pb2.ResetToStepRequest(
            network=network, step=step, fence_run=fence_run, reinitialize=reinitialize))

    def save(self, network: str, vnode: str) -> SavedState:
        reply = self._call(self.vnodes.Save, node_pb2.SaveRequest(network=network, vnode=vnode))
        return {t.name: codec.decode_tensor(t.tensor) for t in reply.tensors}, int(reply.step)

    def save_to_storage(self, network: str, vnode: str) -> tuple[str, int]:
        reply = self._call(self.vnodes.Save, node_pb2.SaveRequest(network=network, vnode=vnode, to_storage=True))
        return reply.digest, int(reply.size)

    def load(self, network: str, vnode: str, step: int, tensors: dict[str, torch.Tensor]) -> None:
        self._call(self.vnodes.Load, node_pb2.LoadRequest(network=network, vnode=vnode, step=step, tensors=[
            common_pb2.NamedTensor(name=k, tensor=codec.encode_tensor(t)) for k, t in tensors.items()]))

    def load_from_storage(self, network: str, vnode: str, step: int, digest: str) -> None:
        self._call(self.vnodes.Load, node_pb2.LoadRequest(network=network, vnode=vnode, step=step, digest=digest))

    def list_vnodes(self, network: str = "") -> list[LocalVNode]:
        reply = self._call(self.admin.ListLocalVNodes, node_pb2.ListLocalVNodesRequest(network=network))
        return [LocalVNode(v.network, v.vnode, v.type, int(v.step), int(v.memory_bytes)) for v in reply.vnodes]

    def drop(self, network: str, vnode: str = "") -> bool:
        reply = self._call(self.admin.DropLocalVNode, node_pb2.DropLocalVNodeRequest(network=network, vnode=vnode))
        return bool(reply.dropped)

    def close(self) -> None:
        """Channels belong to the connector that made this client."""


class GrpcConnector:
    """The orchestrator's `Connector` over gRPC: one channel per PNode address."""

    def __init__(self, identity: Identity, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 timeout: float = 600.0) -> None:
        self.channels = pnode_channels(identity, max_message_bytes)
        self.timeout = timeout
        self._hops = GrpcHopTransport(self.channels)

    def pnode(self, address: str) -> GrpcPNodeClient:
        return GrpcPNodeClient(self.channels.get(address), self.timeout)

    def hops(self) -> GrpcHopTransport:
        return self._hops

    def close(self) -> None:
        self.channels.close()
