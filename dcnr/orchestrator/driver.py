"""Running networks on the fleet: forward, one training step, evaluation, sampling.

Owns each network's step counter and loss scale and the protocol of a step: send
every micro-batch's inputs at once (so PNodes pipeline), wait until every cost has
reported and every VNode of the backward set has finished for every micro-batch,
then `Update` every PNode. It never computes the model: PNodes do, and report back
through `Inbox`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch

from dcnr.errors import Aborted
from dcnr.orchestrator.fleet import Fleet
from dcnr.orchestrator.store import StateStore
from dcnr.proto import codec
from dcnr.proto.v1 import common_pb2, node_pb2
from dcnr.proto.version import version_message
from dcnr.runtime.executor import backward_set, check_inputs, needed_nodes, select_outputs, split_batch
from dcnr.runtime.precision import LossScaler
from dcnr.runtime.sampling import sample_tokens
from dcnr.spec.loader import parse_stored_network
from dcnr.spec.model import NetworkSpec

SENDER = "orchestrator"


class StepFailed(Aborted):
    """A step or request could not finish: a PNode reported a failure, or it timed out."""


@dataclass
class _Run:
    """What PNodes have reported for one request (all its micro-batches)."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    outputs: dict[tuple[int, str, int], Any] = field(default_factory=dict)  # (micro-batch, vnode, slot) -> value
    backward: dict[int, set[str]] = field(default_factory=dict)  # micro-batch -> VNodes done
    error: str = ""


class Inbox:
    """Progress events from PNodes, delivered to whoever waits for that run."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def open(self, run: str) -> _Run:
        with self._lock:
            r = self._runs[run] = _Run()
            return r

    def close(self, run: str) -> None:
        with self._lock:
            self._runs.pop(run, None)

    def deliver(self, events: Sequence[node_pb2.ProgressEvent]) -> None:
        for ev in events:
            with self._lock:
                r = self._runs.get(ev.request.run)
            if r is None:
                continue  # late: nobody waits any more
            with r.cond:
                mb = int(ev.request.micro_batch)
                if ev.kind == node_pb2.ProgressEvent.OUTPUT:
                    r.outputs[(mb, ev.vnode, ev.slot)] = codec.decode_value(ev.value)
                elif ev.kind == node_pb2.ProgressEvent.BACKWARD_DONE:
                    r.backward.setdefault(mb, set()).add(ev.vnode)
                elif ev.kind == node_pb2.ProgressEvent.FAILED and not r.error:
                    r.error = ev.error or f"VNode {ev.vnode!r} failed"
                r.cond.notify_all()


@dataclass
class _Network:
    spec: NetworkSpec
    step: int
    scaler: LossScaler
    lock: threading.Lock = field(default_factory=threading.Lock)
    live: set[str] = field(default_factory=set)


class Driver:
    def __init__(self, store: StateStore, fleet: Fleet, inbox: Inbox, timeout: float = 600.0) -> None:
        self.store = store
        self.fleet = fleet
        self.inbox = inbox
        self.timeout = timeout
        self._networks: dict[str, _Network] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="driver")

    def network(self, name: str) -> _Network:
        with self._lock:
            found = self._networks.get(name)
            if found is None:
                rec = self.store.get_network(name)
                spec = parse_stored_network(rec.yaml, name)
                fp16 = any("fp16" in (n.param_precision, n.activation_precision) for n in spec.nodes.values())
                found = _Network(spec, rec.step, LossScaler(enabled=fp16), live=backward_set(spec))
                self._networks[name] = found
            return found

    def forget(self, name: str) -> None:
        """Drop cached state of a network that was deleted or redefined, and its VNodes on the PNodes."""
        with self._lock:
            self._networks.pop(name, None)
        for pid in {p.id for p in self.fleet.alive()}:
            # a PNode that cannot be reached holds nothing it will be asked for again
            with contextlib.suppress(grpc.RpcError):
                self.fleet.pnode_stub(pid).DropLocalVNode(node_pb2.DropLocalVNodeRequest(network=name), timeout=30)

    # -- sending and waiting --------------------------------------------------------------------
    def _send_inputs(self, net: _Network, placement: dict[str, str], meta: common_pb2.RequestId,
                     batch: Mapping[str, Any], needed: set[str]) -> None:
        for b in net.spec.inputs:
            if b.node_id in needed and b.name in batch:
                hop = node_pb2.HopRequest(version=version_message(), request=meta, vnode=b.node_id, slot=b.slot_id,
                                          value=codec.encode_value(batch[b.name]), sender=SENDER)
                try:
                    self.fleet.vnode_stub(placement[b.node_id]).ReceiveTrainRequest(hop, timeout=60)
                except grpc.RpcError as exc:
                    raise StepFailed(f"cannot send input {b.name!r} to PNode {placement[b.node_id]}: "
                                     f"{exc.code().name}: {exc.details()}") from None

    def _wait(self, run: _Run, done: Any, what: str, pnodes: Sequence[str] = ()) -> None:
        """Until `done()`; fails on a reported error, a PNode of the run marked dead, or the timeout."""
        deadline = time.monotonic() + self.timeout
        next_check = time.monotonic() + 1.0
        with run.cond:
            while not done():
                if run.error:
                    raise StepFailed(run.error)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StepFailed(f"{what} timed out after {self.timeout:g} s")
                run.cond.wait(min(left, 1.0))
                if pnodes and time.monotonic() >= next_check and not done():  # liveness: once a second
                    next_check = time.monotonic() + 1.0
                    alive = {p.id for p in self.fleet.alive()}
                    gone = sorted(set(pnodes) - alive)
                    if gone:
                        raise StepFailed(f"{what} failed: PNode {gone[0]} left the fleet or stopped heartbeating")
            if run.error:
                raise StepFailed(run.error)

    def _each_pnode(self, pnodes: Sequence[str], request: node_pb2.UpdateRequest) -> list[node_pb2.UpdateResponse]:
        futures = [self._pool.submit(self.fleet.vnode_stub(p).Update, request, timeout=self.timeout) for p in pnodes]
        try:
            return [f.result() for f in futures]
        except grpc.RpcError as exc:
            raise StepFailed(f"update failed on a PNode: {exc.code().name}: {exc.details()}") from None

    # -- training ------------------------------------------------------------------------------
    def train_step(self, name: str, inputs: Mapping[str, Any], micro_batches: int = 1,
                   run_prefix: str = "train") -> tuple[dict[str, float], int, bool, dict[str, float]]:
        """One step across the fleet: (costs averaged over micro-batches, new step, skipped, learning rates)."""
        net = self.network(name)
        spec = net.spec
        if not spec.costs:
            raise ValueError(f"network {name!r} has no costs to train")
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be at least 1, got {micro_batches}")
        needed = needed_nodes(spec, {b.node_id for b in spec.costs})
        chunks = split_batch(check_inputs(spec, inputs, needed), micro_batches)
        with net.lock:
            placement = self.fleet.placement(spec, batch_size=_batch_size(chunks[0]))
            pnodes = sorted(set(placement.values()))
            run_id = f"{run_prefix}/{name}/{net.step}/{uuid.uuid4().hex[:8]}"
            run = self.inbox.open(run_id)
            grad_scale = net.scaler.scale / micro_batches
            try:
                for mb, chunk in enumerate(chunks):
                    meta = common_pb2.RequestId(network=name, run=run_id, step=net.step, micro_batch=mb, kind="train",
                                                grad_scale=grad_scale)
                    self._send_inputs(net, placement, meta, chunk, needed)
                cost_keys = [(b.name, b.node_id, b.slot_id) for b in spec.costs]
                self._wait(run, lambda: all(
                    len(run.backward.get(mb, ())) == len(net.live)
                    and all((mb, n, s) in run.outputs for _, n, s in cost_keys) for mb in range(micro_batches)),
                    f"step {net.step} of network {name!r}", pnodes)
            except BaseException:
                # nothing half-done may poison the retry of this step; an unreachable PNode is the
                # failure already being reported
                with contextlib.suppress(StepFailed):
                    self._each_pnode(pnodes, node_pb2.UpdateRequest(network=name, abandon=True, step=net.step,
                                                                            run=run_id))
                raise
            finally:
                self.inbox.close(run_id)
            costs = {}
            for cname, nid, slot in cost_keys:
                total = 0.0
                for mb in range(micro_batches):  # micro-batch order, as the LocalExecutor sums
                    total += float(run.outputs[(mb, nid, slot)]) / micro_batches
                costs[cname] = total
            finite = True
            if net.scaler.enabled:
                checks = self._each_pnode(pnodes, node_pb2.UpdateRequest(network=name, check_only=True))
                finite = all(r.finite for r in checks)
            scale = net.scaler.scale
            apply = net.scaler.update(finite)
            replies = self._each_pnode(pnodes, node_pb2.UpdateRequest(
                network=name, loss_scale=scale, apply=apply, step=net.step + 1))
            net.step += 1
            self.store.set_network_step(name, net.step)
            lrs: dict[str, float] = {}
            for r in replies:
                lrs.update(r.learning_rates)
            metrics = {m.name: lrs[m.node_id] for m in spec.metrics if m.node_id in lrs}
            return costs, net.step, not apply, metrics

    # -- forward-only work -----------------------------------------------------------------------
    def _evaluate(self, name: str, inputs: Mapping[str, Any], kind: str, outputs: Sequence[str] = ()) -> _Run:
        net = self.network(name)
        spec = net.spec
        if kind == "infer":
            by_name = {b.name: b for b in spec.outputs}
            targets = {by_name[o].node_id for o in outputs}
        else:
            targets = {b.node_id for b in spec.costs}
        needed = needed_nodes(spec, targets)
        batch = check_inputs(spec, inputs, needed)
        placement = self.fleet.placement(spec, batch_size=_batch_size(batch))
        run_id = f"{kind}/{name}/{uuid.uuid4().hex}"
        run = self.inbox.open(run_id)
        step = uuid.uuid4().int & ((1 << 62) - 1)  # forward-only work never collides with another request
        meta = common_pb2.RequestId(network=name, run=run_id, step=step, kind=kind, outputs=list(outputs))
        try:
            self._send_inputs(net, placement, meta, batch, needed)
            if kind == "infer":
                keys = [(0, by_name[o].node_id, by_name[o].slot_id) for o in outputs]
            else:
                keys = [(0, b.node_id, b.slot_id) for b in spec.costs]
            self._wait(run, lambda: all(k in run.outputs for k in keys), f"{kind} request on network {name!r}",
                       sorted(set(placement.values())))
        finally:
            self.inbox.close(run_id)
        return run

    def forward(self, name: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        spec = self.network(name).spec
        wanted = select_outputs(spec, set(inputs), outputs)
        run = self._evaluate(name, inputs, "infer", wanted)
        by_name = {b.name: b for b in spec.outputs}
        return {o: run.outputs[(0, by_name[o].node_id, by_name[o].slot_id)] for o in wanted}

    def costs(self, name: str, inputs: Mapping[str, Any]) -> dict[str, float]:
        """The network's costs on one batch, without training (dropout off, nothing cached)."""
        spec = self.network(name).spec
        if not spec.costs:
            raise ValueError(f"network {name!r} has no costs to evaluate")
        run = self._evaluate(name, inputs, "eval")
        return {b.name: float(run.outputs[(0, b.node_id, b.slot_id)]) for b in spec.costs}

    def generate(self, name: str, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float,
                 top_k: int | None, seed: int) -> Iterator[int]:
        spec = self.network(name).spec
        yield from sample_tokens(lambda x, outs: self.forward(name, x, outs), spec, prompt_ids, max_new_tokens,
                                 temperature, top_k, seed)

    def reset(self, name: str, step: int, loss_scale: float = 0.0, good_steps: int = 0) -> None:
        """The network is back at `step` (restored from a checkpoint), with that step's loss scale."""
        net = self.network(name)
        net.step = step
        if loss_scale:
            net.scaler.scale, net.scaler.good_steps = loss_scale, good_steps
        self.store.set_network_step(name, step)

    def step_of(self, name: str) -> int:
        return self.network(name).step

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _batch_size(batch: Mapping[str, Any]) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim():
            return int(v.shape[0])
        if isinstance(v, list):
            return len(v)
    return 1
