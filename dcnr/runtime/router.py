"""The router: given a VNode's result, the messages to emit.

One router serves the in-process `LocalExecutor` and every PNode, so in-process and
distributed execution agree by construction: both hand a `Hop` to `Router.deliver`, which
runs the VNode (forward or backward) and returns what must happen next — forward hops to
downstream VNodes, the backward seed at a cost (taken from the run, never from a hop),
gradients to upstream VNodes, and reports (outputs and costs the caller waits for, and a
"done" marker per VNode that finished its backward for a micro-batch). Where a message
goes (the same process or another PNode) is the caller's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dcnr.runtime.graph import backward_set, needed_nodes
from dcnr.runtime.vnode import RequestId, VNode
from dcnr.spec.model import NetworkSpec
from dcnr.transport.messages import Hop, Report, Run

Message = Hop | Report


class Router:
    """Routing facts of one network, computed once."""

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.edges = list(spec.edges)
        self.live = backward_set(spec)  # VNodes that take part in the backward pass
        self.roots = {b.node_id for b in spec.costs}
        self.feeds = {(e.dst, e.dst_slot): i for i, e in enumerate(self.edges)}
        self.out_edges = {nid: [(i, e) for i, e in enumerate(self.edges) if e.src == nid] for nid in spec.nodes}
        self.outputs: dict[str, list[tuple[str, int]]] = {}  # node -> [(output name, slot)]
        self.costs: dict[str, list[tuple[str, int]]] = {}
        for b in spec.outputs:
            self.outputs.setdefault(b.node_id, []).append((b.name, b.slot_id))
        for b in spec.costs:
            self.costs.setdefault(b.node_id, []).append((b.name, b.slot_id))
        self._needed: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}

    def needed(self, run: Run) -> frozenset[str]:
        """VNodes a run must reach: the costs' ancestors (train, eval) or the wanted outputs' (infer)."""
        key = (run.kind, run.outputs if run.kind == "infer" else ())
        found = self._needed.get(key)
        if found is None:
            if run.kind == "infer":
                wanted = set(run.outputs) or {b.name for b in self.spec.outputs}
                targets = {b.node_id for b in self.spec.outputs if b.name in wanted}
            else:
                targets = set(self.roots)
            found = self._needed[key] = frozenset(needed_nodes(self.spec, targets))
        return found

    def inputs(self, run: Run, micro_batch: int, batch: Mapping[str, Any], sender: str = "") -> list[Hop]:
        """The hops that feed a micro-batch's network inputs to their VNodes."""
        needed = self.needed(run)
        return [Hop(run.network, run.id, micro_batch, "fwd", b.node_id, b.slot_id, batch[b.name], sender)
                for b in self.spec.inputs if b.node_id in needed and b.name in batch]

    def reported(self, run: Run) -> list[tuple[str, int]]:
        """(VNode, slot) pairs whose values a run reports: the costs, or the wanted outputs."""
        if run.kind != "infer":
            return [(b.node_id, b.slot_id) for b in self.spec.costs]
        wanted = set(run.outputs) or {b.name for b in self.spec.outputs}
        return [(b.node_id, b.slot_id) for b in self.spec.outputs if b.name in wanted]

    def deliver(self, vnode: VNode, run: Run, hop: Hop) -> list[Message]:
        """Run `vnode` on one hop of `run`; returns the messages that follow (empty while it waits)."""
        rid = RequestId(run.id, run.step, hop.micro_batch, run.kind)
        if hop.op == "bwd":
            if run.kind != "train":
                raise ValueError(f"gradients belong to training runs, got a {run.kind} run")
            grads = vnode.receive_grad(rid, hop.index, hop.value)
            return [] if grads is None else self._upstream(run, hop.micro_batch, vnode.id, grads)
        ys = vnode.receive_input(rid, hop.index, hop.value, training=run.kind == "train")
        if ys is None:
            return []
        out: list[Message] = []
        bound = self.costs if run.kind != "infer" else self.outputs
        wanted = set(run.outputs)
        for name, slot in bound.get(vnode.id, ()):
            if run.kind != "infer" or not wanted or name in wanted:
                out.append(Report("output", run.network, run.id, hop.micro_batch, vnode.id, slot, ys[slot]))
        needed = self.needed(run)
        for _, e in self.out_edges[vnode.id]:
            if e.dst in needed:
                out.append(Hop(run.network, run.id, hop.micro_batch, "fwd", e.dst, e.dst_slot, ys[e.src_slot]))
        if run.kind == "train" and vnode.id in self.roots:
            seed = torch.full_like(ys[0], run.grad_scale)  # d(total)/d(this loss) = loss scale / micro-batches
            out += self._upstream(run, hop.micro_batch, vnode.id, vnode.start_backward(rid, seed))
        return out

    def _upstream(self, run: Run, micro_batch: int, vnode: str, grads: list[torch.Tensor | None]) -> list[Message]:
        """Input gradients to the upstream VNodes that take them (network inputs' gradients leave the
        network), after the marker that this VNode's backward of the micro-batch is done."""
        out: list[Message] = [Report("done", run.network, run.id, micro_batch, vnode)]
        for slot, g in enumerate(grads):
            index = self.feeds.get((vnode, slot))
            if index is not None and self.edges[index].src in self.live:
                out.append(Hop(run.network, run.id, micro_batch, "bwd", self.edges[index].src, index, g))
        return out
