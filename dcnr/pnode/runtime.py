"""The PNode's work loop: asynchronous training hops between VNodes.

Owns the order in which a PNode's VNodes compute, the routing of their outputs and
gradients (in-process to a colocated VNode, over gRPC to a remote one), location
caching, and reporting to the orchestrator. It must not decide placement or drive
steps: the orchestrator does.

One compute thread runs every VNode of this PNode (torch's own threads parallelise
each op), so gRPC handlers only decode and enqueue: compute never blocks the RPC
loop. A message for a request that already fired, or a training message older than
the network's current step, is dropped: duplicates and late messages are harmless.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import torch

from dcnr.data.vocabularies import Vocabularies
from dcnr.pnode.blobs import BlobClient
from dcnr.pnode.host import BudgetExceeded, UnknownTarget, VNodeHost
from dcnr.proto import codec
from dcnr.proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from dcnr.proto.version import version_message
from dcnr.runtime.executor import backward_set, needed_nodes, upstream_gradients
from dcnr.runtime.vnode import RequestId
from dcnr.spec.loader import parse_stored_network
from dcnr.spec.model import NetworkSpec

log = logging.getLogger("dcnr.pnode")

SEND_ATTEMPTS = 4  # a hop to an unreachable PNode is re-resolved and retried this often
SEEN_MEMORY = 65536  # hop keys remembered for duplicate detection
ABANDONED_MEMORY = 1024  # abandoned runs remembered, so their late messages are dropped


class OrchestratorLink(Protocol):
    """What a PNode asks of the orchestrator."""

    def network_yaml(self, name: str) -> str: ...
    def vocabulary_json(self, name: str) -> str: ...
    def locate(self, network: str, vnode: str, refresh: bool) -> tuple[str, str]: ...
    def report(self, events: list[node_pb2.ProgressEvent]) -> None: ...


@dataclass
class _Work:
    op: str  # "fwd" | "bwd"
    meta: common_pb2.RequestId  # the wire request id, passed on with every hop
    vnode: str
    index: int  # input slot (fwd) or edge index (bwd)
    value: Any
    attempts: int = 0


@dataclass
class _Call:
    fn: Callable[[], Any]
    done: Future[Any] = field(default_factory=Future)


class NetworkView:
    """What routing needs to know about one network, computed once."""

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.edges = list(spec.edges)
        self.live = backward_set(spec)
        self.roots = {b.node_id for b in spec.costs}
        self.feeds = {(e.dst, e.dst_slot): i for i, e in enumerate(self.edges)}
        self.outputs: dict[str, list[tuple[str, int]]] = {}  # node -> [(output name, slot)]
        self.costs: dict[str, list[tuple[str, int]]] = {}
        for b in spec.outputs:
            self.outputs.setdefault(b.node_id, []).append((b.name, b.slot_id))
        for b in spec.costs:
            self.costs.setdefault(b.node_id, []).append((b.name, b.slot_id))
        self._needed: dict[tuple[str, tuple[str, ...]], set[str]] = {}

    def needed(self, kind: str, outputs: tuple[str, ...]) -> set[str]:
        """Nodes a request of this kind must reach (train/eval: the costs; infer: the outputs asked for)."""
        key = (kind, outputs if kind == "infer" else ())
        found = self._needed.get(key)
        if found is None:
            if kind == "infer":
                wanted = set(outputs) or {b.name for b in self.spec.outputs}
                targets = {b.node_id for b in self.spec.outputs if b.name in wanted}
            else:
                targets = set(self.roots)
            found = self._needed[key] = needed_nodes(self.spec, targets)
        return found


def request_key(meta: common_pb2.RequestId) -> RequestId:
    """The VNode-level request id (the network is the VNode's own)."""
    return RequestId(int(meta.step), int(meta.micro_batch), meta.kind or "infer")


class PNodeRuntime:
    """Runs this PNode's VNodes and moves their messages. Thread-safe entry points:
    `submit_forward`, `submit_grad`, `call`; everything else runs on the compute thread."""

    def __init__(self, pnode_id: str, link: OrchestratorLink | None = None, device: str = "cpu",
                 memory_budget: int | None = None, task_timeout: float = 300.0, send_timeout: float = 60.0,
                 max_message_bytes: int = 256 * 2**20) -> None:
        self.id = pnode_id
        self.link = link
        self.blobs: BlobClient | None = None  # checkpoint blobs, through the orchestrator's StorageService
        self.host = VNodeHost(device, memory_budget=memory_budget)
        self.task_timeout = task_timeout
        self.send_timeout = send_timeout
        self.max_message_bytes = max_message_bytes
        self.stats: dict[str, float] = {"hops_sent": 0, "bytes_sent": 0, "tensor_bytes_sent": 0, "local_hops": 0,
                                        "refused": 0, "busy_seconds": 0.0}  # busy: VNode compute
        self._views: dict[str, NetworkView] = {}
        self._views_lock = threading.Lock()
        self._locations: dict[tuple[str, str], tuple[str, str]] = {}
        self._work: queue.Queue[_Work | _Call | None] = queue.Queue()
        self._outbox: queue.Queue[_Work | None] = queue.Queue()
        self._events: queue.Queue[node_pb2.ProgressEvent | None] = queue.Queue()
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._abandoned: OrderedDict[str, None] = OrderedDict()
        self._started: dict[tuple[str, RequestId], float] = {}  # first hop of each request, for timeouts
        self._channels: dict[str, tuple[grpc.Channel, node_pb2_grpc.VNodeServiceStub]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        for name, target in (("compute", self._compute_loop), ("outbox", self._outbox_loop),
                             ("reporter", self._report_loop)):
            t = threading.Thread(target=target, name=f"pnode-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stopping.set()
        self._work.put(None)
        self._outbox.put(None)
        self._events.put(None)
        for t in self._threads:
            t.join(timeout=10)
        for channel, _ in self._channels.values():
            channel.close()

    # -- entry points (any thread) --------------------------------------------------------
    def view(self, network: str) -> NetworkView:
        """The network's routing view; its definition is fetched from the orchestrator once."""
        with self._views_lock:
            found = self._views.get(network)
        if found is not None:
            return found
        if self.link is None:
            raise UnknownTarget(f"unknown network {network!r}")
        spec = parse_stored_network(self.link.network_yaml(network), network)
        return self.add_network(spec)

    def add_network(self, spec: NetworkSpec, seed: int | None = None) -> NetworkView:
        with self._views_lock:
            view = self._views.get(spec.name)
            if view is None:
                # stored vocabularies of tokenizer nodes come from our orchestrator
                vocabularies = Vocabularies(self.link.vocabulary_json) if self.link is not None else None
                self.host.add_network(spec, seed, vocabularies)
                view = self._views[spec.name] = NetworkView(spec)
            return view

    def forget_network(self, network: str) -> int:
        """Drop a network's VNodes and cached definition and locations; returns VNodes dropped."""
        with self._views_lock:
            self._views.pop(network, None)
        self._locations = {k: v for k, v in self._locations.items() if k[0] != network}
        return self.host.remove_network(network)

    def check_hop(self, meta: common_pb2.RequestId, vnode: str, op: str, index: int) -> None:
        """Refuse a hop that names an unknown VNode, slot or edge (ValueError / UnknownTarget)."""
        view = self.view(meta.network)
        node = view.spec.nodes.get(vnode)
        if node is None:
            raise UnknownTarget(f"network {meta.network!r} has no VNode {vnode!r}")
        if meta.kind not in ("", "train", "eval", "infer"):  # empty: infer
            raise ValueError(f"request kind must be train, eval or infer, got {meta.kind!r}")
        if op == "fwd" and index >= node.impl.num_inputs:
            raise ValueError(f"VNode {vnode!r} has {node.impl.num_inputs} input slot(s), got slot {index}")
        if op == "bwd" and (index >= len(view.edges) or view.edges[index].src != vnode):
            raise ValueError(f"edge {index} of network {meta.network!r} does not leave VNode {vnode!r}")

    def submit(self, op: str, meta: common_pb2.RequestId, vnode: str, index: int, value: Any) -> bool:
        """Queue a hop; False when it is a duplicate of one already queued."""
        key = (op, meta.network, meta.run, meta.kind, meta.step, meta.micro_batch, vnode, index)
        with self._seen_lock:
            if key in self._seen or meta.run in self._abandoned:
                return False
            self._seen[key] = None
            if len(self._seen) > SEEN_MEMORY:
                self._seen.popitem(last=False)
        self._work.put(_Work(op, meta, vnode, index, value))
        return True

    def load(self) -> float:
        """Queued work per compute thread: what heartbeats report."""
        return float(self._work.qsize())

    def call(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run `fn` on the compute thread (between two VNode computations) and return its result."""
        c = _Call(fn)
        self._work.put(c)
        return c.done.result(timeout=timeout)

    # -- compute thread -------------------------------------------------------------------
    def _compute_loop(self) -> None:
        last_sweep = time.monotonic()
        while True:
            try:
                item = self._work.get(timeout=1.0)
            except queue.Empty:
                item = None if self._stopping.is_set() else _Call(lambda: None)
            if item is None:
                return
            if isinstance(item, _Call):
                try:
                    item.done.set_result(item.fn())
                except BaseException as exc:  # handed to the caller
                    item.done.set_exception(exc)
            elif item.meta.run not in self._abandoned:  # work of an abandoned step is dropped
                started = time.perf_counter()
                try:
                    with torch.no_grad():
                        (self._forward if item.op == "fwd" else self._backward)(item)
                except BudgetExceeded as exc:
                    self.stats["refused"] += 1
                    self._report_failure(item, str(exc))
                except Exception as exc:  # a bad value or a node error fails this request only
                    log.warning("VNode %s failed on %s: %s", item.vnode, request_key(item.meta), exc)
                    self._report_failure(item, f"VNode {item.vnode!r}: {exc}")
                self.stats["busy_seconds"] += time.perf_counter() - started
            if time.monotonic() - last_sweep > 1.0:
                self._expire()
                last_sweep = time.monotonic()

    def _forward(self, w: _Work) -> None:
        meta, rid = w.meta, request_key(w.meta)
        view = self.view(meta.network)
        if rid.kind == "train" and rid.step < self.host.step(meta.network):
            return  # late: that step is over
        self._started.setdefault((meta.network, rid), time.monotonic())
        vnode = self.host.vnode(meta.network, w.vnode)
        ys = vnode.receive_input(rid, w.index, w.value, training=rid.kind == "train")
        if ys is None:
            return
        if rid.kind == "infer":
            wanted = set(meta.outputs)
            for name, slot in view.outputs.get(w.vnode, []):
                if not wanted or name in wanted:
                    self._report(node_pb2.ProgressEvent.OUTPUT, meta, w.vnode, slot, ys[slot])
        else:
            for _, slot in view.costs.get(w.vnode, []):
                self._report(node_pb2.ProgressEvent.OUTPUT, meta, w.vnode, slot, ys[slot])
        needed = view.needed(rid.kind, tuple(meta.outputs))
        for e in view.spec.out_edges(w.vnode):
            if e.dst in needed:
                self._route(_Work("fwd", meta, e.dst, e.dst_slot, ys[e.src_slot]))
        if rid.kind == "train" and w.vnode in view.roots:
            seed = torch.full_like(ys[0], meta.grad_scale)
            self._gradients_out(view, meta, w.vnode, vnode.start_backward(rid, seed))

    def _backward(self, w: _Work) -> None:
        rid = request_key(w.meta)
        if rid.kind != "train":
            raise ValueError(f"gradients belong to training requests, got kind {rid.kind!r}")
        view = self.view(w.meta.network)
        grads = self.host.vnode(w.meta.network, w.vnode).receive_grad(rid, w.index, w.value)
        if grads is not None:
            self._gradients_out(view, w.meta, w.vnode, grads)

    def _gradients_out(self, view: NetworkView, meta: common_pb2.RequestId, vnode: str,
                       grads: list[torch.Tensor | None]) -> None:
        self._report(node_pb2.ProgressEvent.BACKWARD_DONE, meta, vnode)
        for src, index, g in upstream_gradients(view.edges, view.feeds, view.live, vnode, grads):
            self._route(_Work("bwd", meta, src, index, g))

    def _route(self, w: _Work) -> None:
        if w.meta.run in self._abandoned:
            return
        loc = self._locations.get((w.meta.network, w.vnode)) if self.link is not None else (self.id, "")
        if loc is not None and loc[0] == self.id:
            self.stats["local_hops"] += 1
            self._work.put(w)  # colocated: the tensor itself, no serialization
        else:
            self._outbox.put(w)

    def _expire(self) -> None:
        """Drop requests that waited longer than the task timeout, and say so."""
        now = time.monotonic()
        stale = [k for k, t in self._started.items() if now - t > self.task_timeout]
        for network, rid in stale:
            del self._started[(network, rid)]
            dropped = self.host.drop_request(network, rid)
            if dropped:
                self.stats["refused"] += 1
                meta = common_pb2.RequestId(network=network, step=rid.step, micro_batch=rid.micro_batch,
                                            kind=rid.kind)
                self._report(node_pb2.ProgressEvent.FAILED, meta, dropped[0], error=(
                    f"PNode {self.id}: request {rid} timed out after {self.task_timeout:g} s waiting for inputs "
                    f"or gradients at VNode(s) {', '.join(dropped[:4])}"))

    # -- update, save, load (called through `call`) --------------------------------------------
    def update(self, network: str, loss_scale: float, apply: bool, check_only: bool,
               step: int, abandon: bool = False, run: str = "") -> tuple[bool, dict[str, float]]:
        vnodes = [v for _, v in self.host.local(network)]
        if check_only:
            return all(v.grads_finite() for v in vnodes), {}
        if abandon:
            with self._seen_lock:
                self._abandoned[run] = None
                if len(self._abandoned) > ABANDONED_MEMORY:
                    self._abandoned.popitem(last=False)
            for v in vnodes:
                for name in v.owned:
                    v.params[name].zero_grad()
                v.abandon_step()
                v.step = step
            self.host.set_step(network, step)  # a restore may move the network back to a checkpoint's step
            # VNodes may have moved (a PNode died): ask again where they are
            self._locations = {k: v for k, v in self._locations.items() if k[0] != network}
            with self._seen_lock:  # the step will be sent again under the same request ids
                for key in [k for k in self._seen if k[1] == network]:
                    del self._seen[key]
            self._started = {k: t for k, t in self._started.items() if k[0] != network}
            return True, {}
        for v in vnodes:
            v.apply_update(loss_scale, apply)
            v.step = step
        self.host.set_step(network, step)
        self._started = {k: t for k, t in self._started.items() if k[0] != network or k[1].kind != "train"}
        return True, {v.id: v.learning_rate() for v in vnodes if v.params}

    # -- outbox thread: resolution and remote sends ---------------------------------------------
    def _outbox_loop(self) -> None:
        while True:
            w = self._outbox.get()
            if w is None:
                return
            try:
                self._send(w)
            except Exception as exc:
                self._report_failure(w, f"cannot deliver to VNode {w.vnode!r}: {exc}")

    def _locate(self, network: str, vnode: str, refresh: bool = False) -> tuple[str, str]:
        key = (network, vnode)
        if not refresh and key in self._locations:
            return self._locations[key]
        assert self.link is not None
        loc = self._locations[key] = self.link.locate(network, vnode, refresh)
        return loc

    def _stub(self, address: str) -> node_pb2_grpc.VNodeServiceStub:
        found = self._channels.get(address)
        if found is None:
            options = [("grpc.max_send_message_length", self.max_message_bytes),
                       ("grpc.max_receive_message_length", self.max_message_bytes)]
            channel = grpc.insecure_channel(address, options=options)
            found = self._channels[address] = (channel, node_pb2_grpc.VNodeServiceStub(channel))
        return found[1]

    def _send(self, w: _Work) -> None:
        if w.meta.run in self._abandoned:
            return
        pnode, address = self._locate(w.meta.network, w.vnode, refresh=w.attempts > 0)
        if pnode == self.id:
            self.stats["local_hops"] += 1
            self._work.put(w)
            return
        stub = self._stub(address)
        if w.op == "fwd":
            msg: Any = node_pb2.HopRequest(version=version_message(), request=w.meta, vnode=w.vnode, slot=w.index,
                                           value=codec.encode_value(w.value), sender=self.id)
            call = stub.ReceiveTrainRequest
        else:
            msg = node_pb2.GradientHop(version=version_message(), request=w.meta, vnode=w.vnode, edge=w.index,
                                       has_gradient=w.value is not None)
            if w.value is not None:
                msg.gradient.CopyFrom(codec.encode_tensor(w.value))
            call = stub.ReceiveTrainResponse
        self.stats["hops_sent"] += 1
        self.stats["bytes_sent"] += msg.ByteSize()
        self.stats["tensor_bytes_sent"] += _tensor_bytes(w.value)
        future = call.future(msg, timeout=self.send_timeout)
        future.add_done_callback(lambda f: self._sent(w, address, f))

    def _sent(self, w: _Work, address: str, future: grpc.Future) -> None:
        exc = future.exception()
        if exc is None:
            return
        code = exc.code() if isinstance(exc, grpc.Call) else None
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and w.attempts + 1 < SEND_ATTEMPTS:
            w.attempts += 1
            time.sleep(min(2.0, 0.1 * 2**w.attempts))
            self._outbox.put(w)  # re-resolved before the next try: the VNode may have moved
            return
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        self._report_failure(w, f"cannot deliver to VNode {w.vnode!r} at {address}: "
                                f"{code.name if code else 'error'}: {detail}")

    # -- reporting ---------------------------------------------------------------------------
    def _report(self, kind: int, meta: common_pb2.RequestId, vnode: str, slot: int = 0, value: Any = None,
                error: str = "") -> None:
        if self.link is None:
            return
        event = node_pb2.ProgressEvent(kind=kind, request=meta, vnode=vnode, slot=slot, error=error)  # type: ignore[arg-type]
        if value is not None:
            event.value.CopyFrom(codec.encode_value(value))
        self._events.put(event)

    def _report_failure(self, w: _Work, error: str) -> None:
        self._report(node_pb2.ProgressEvent.FAILED, w.meta, w.vnode, error=error)

    def _report_loop(self) -> None:
        while True:
            first = self._events.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 512:
                try:
                    nxt = self._events.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._events.put(None)
                    break
                batch.append(nxt)
            for attempt in range(5):
                try:
                    assert self.link is not None
                    self.link.report(batch)
                    break
                except Exception as exc:  # the orchestrator may be restarting
                    log.warning("progress report failed (%s); retrying", exc)
                    if self._stopping.wait(0.2 * 2**attempt):
                        return


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return 0
