"""SPEC §6 optimization passes: the graph that is executed, derived from the written one.

`plan(spec)` is the one place where anything that runs a network gets its graph from:
`LocalExecutor`, and on the distributed side the orchestrator's placement and driver
and the PNode (each calls `plan(parse_stored_network(yaml, name))`), so they always
agree on which VNodes exist. The submitted YAML and the written `NetworkSpec` are left
as they are; `fuse: false` at the top of the YAML turns the passes off.

Two rewrites, each applied only where the pattern is recognised completely (anything
else is left alone):
- `broadcast -> N x attention_head -> stack` becomes one `attention` node without an
  output projection (`[seq, N·head_dim]`, heads in the stack's slot order), under the
  stack's id;
- a weight-tied, bias-free `linear` whose only consumer is a `ce_logits` `cost` becomes,
  with the cost, one `tied_lm_head_ce` node under the cost's id. When the linear is also
  a network output or metric it stays, for inference only (training no longer reaches it).

Parameter names stay those of the written graph: `ExecutionPlan.parts` says which rows of
a fused node's parameter are which written parameter, so initial values, exports and
checkpoints are the same whether fused or not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from dcnr.nodes.attention import Attention
from dcnr.nodes.attention_head import AttentionHead
from dcnr.nodes.base import NodeConfig
from dcnr.nodes.cost import Cost
from dcnr.nodes.linear import Linear
from dcnr.nodes.stack import Stack
from dcnr.nodes.tied_lm_head_ce import TiedLMHeadCE
from dcnr.spec.model import Binding, Edge, NetworkSpec, NodeSpec


@dataclass(frozen=True)
class ParamPart:
    """Rows `start:stop` (axis 0) of an executed parameter hold written parameter `node.param`."""

    node: str  # written node id
    param: str  # its parameter name
    start: int
    stop: int


@dataclass(frozen=True)
class ExecutionPlan:
    """The written network, the network that is executed, and how their parameters correspond."""

    written: NetworkSpec
    spec: NetworkSpec  # what VNodes are built from and messages are routed by
    fused: Mapping[str, tuple[str, ...]]  # executed fused node -> the written nodes it replaces
    parts: Mapping[str, Mapping[str, tuple[ParamPart, ...]]]  # fused node -> its parameter -> parts

    def param_parts(self, node: str, param: str) -> tuple[ParamPart, ...] | None:
        """The written parameters a fused node's parameter is made of; None when the
        executed parameter is the written one (same node id and name)."""
        return self.parts.get(node, {}).get(param)


def plan(spec: NetworkSpec) -> ExecutionPlan:
    """The executed graph of a validated network (the written one when `spec.fuse` is false)."""
    if not spec.fuse:
        return ExecutionPlan(spec, spec, {}, {})
    graph = _Graph(spec)
    for node in spec.nodes.values():
        if node.type == "broadcast":
            graph.fuse_heads(node)
    for node in spec.nodes.values():
        if node.type == "cost":
            graph.fuse_lm_head(node)
    return graph.build()


_COMMON_KEYS = tuple(k for k in NodeConfig.model_fields if k not in ("input_shape", "output_shape"))


def _common(cfg: NodeConfig) -> dict[str, object]:
    """The keys every node type understands (optimizer, precision, placement), as set on `cfg`."""
    return {k: getattr(cfg, k) for k in _COMMON_KEYS}


class _Graph:
    """The written graph being rewritten: nodes replaced, edges and bindings moved."""

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.replaced: dict[str, NodeSpec] = {}  # node id -> its new definition
        self.removed: set[str] = set()
        self.edges: list[Edge | None] = list(spec.edges)  # None: removed (positions keep edge order)
        self.inserted: dict[int, list[Edge]] = {}  # edges placed right after edge index i
        self.rebound: dict[str, str] = {}  # input bindings: old node id -> new node id
        self.fused: dict[str, tuple[str, ...]] = {}
        self.parts: dict[str, dict[str, tuple[ParamPart, ...]]] = {}
        self.index = {e: i for i, e in enumerate(spec.edges)}
        self.bound: dict[str, list[tuple[str, Binding]]] = {}  # node id -> (kind, binding)
        for kind in ("inputs", "outputs", "costs", "metrics"):
            for b in getattr(spec, kind):
                self.bound.setdefault(b.node_id, []).append((kind, b))

    def _free(self, *nids: str) -> bool:
        return not any(n in self.removed or n in self.replaced for n in nids)

    def _bindings(self, nid: str) -> list[tuple[str, Binding]]:
        return self.bound.get(nid, [])

    # -- broadcast -> N x attention_head -> stack ------------------------------------------
    def fuse_heads(self, bcast: NodeSpec) -> None:
        spec = self.spec
        outs = spec.out_edges(bcast.id)
        n = bcast.impl.num_outputs
        if len(outs) != n or sorted(e.src_slot for e in outs) != list(range(n)):
            return  # an output slot unused or feeding several nodes
        heads = [spec.nodes[e.dst] for e in outs]
        if any(not isinstance(h.impl, AttentionHead) or e.dst_slot != 0 for h, e in zip(heads, outs, strict=True)):
            return
        if len({h.id for h in heads}) != n:
            return
        head_outs = [spec.out_edges(h.id) for h in heads]
        if any(len(o) != 1 or o[0].src_slot != 0 for o in head_outs):
            return  # a head output also used elsewhere
        stack = spec.nodes[head_outs[0][0].dst]
        if not isinstance(stack.impl, Stack) or stack.impl.cfg.axis != -1:
            return
        into_stack = spec.in_edges(stack.id)
        if len(into_stack) != n or any(o[0].dst != stack.id for o in head_outs):
            return  # the stack also concatenates something else
        by_slot = {e.dst_slot: spec.nodes[e.src] for e in into_stack}
        if sorted(by_slot) != list(range(n)):
            return
        ordered = [by_slot[i] for i in range(n)]  # head order = stack slot order
        first = ordered[0]
        assert isinstance(first.impl, AttentionHead)
        if any(h.config != first.config or (h.param_precision, h.activation_precision) !=
               (first.param_precision, first.activation_precision) for h in ordered):
            return  # heads configured differently
        if any(m.activation_precision != first.activation_precision for m in (bcast, stack)):
            return  # a cast between the parts would be lost
        place = (first.config.colocate_group, first.config.colocate_policy)
        if any((m.config.colocate_group, m.config.colocate_policy) != place for m in (bcast, stack)):
            return
        if any(self._bindings(h.id) for h in ordered):
            return  # an output, cost or metric points into the fused part
        if any(kind != "inputs" or b.slot_id != 0 for kind, b in self._bindings(bcast.id)):
            return
        if any(kind not in ("outputs",) or b.slot_id != 0 for kind, b in self._bindings(stack.id)):
            return
        if not self._free(bcast.id, stack.id, *(h.id for h in ordered)):
            return
        hc = first.impl.cfg
        cfg = Attention.Config.model_validate({
            **_common(hc), "input_shape": hc.input_shape, "output_shape": stack.config.output_shape,
            "num_heads": n, "head_dim": hc.head_dim, "dim": hc.input_dim, "seq_len": hc.seq_len,
            "causal": hc.causal, "position_encoding": hc.position_encoding, "rope_theta": hc.rope_theta,
            "output_projection": False,
        })
        fused = NodeSpec(
            id=stack.id, type="attention", impl=Attention(stack.id, cfg),
            input_shapes=bcast.input_shapes, output_shapes=stack.output_shapes,
            param_precision=first.param_precision, activation_precision=first.activation_precision,
            symbolic_inputs=bcast.symbolic_inputs, symbolic_outputs=stack.symbolic_outputs,
        )
        hd = hc.head_dim
        self.parts[stack.id] = {
            p: tuple(ParamPart(h.id, p, i * hd, (i + 1) * hd) for i, h in enumerate(ordered))
            for p in ("q.weight", "k.weight", "v.weight")
        }
        self.fused[stack.id] = (bcast.id, *(h.id for h in ordered), stack.id)
        self.replaced[stack.id] = fused
        self.removed.update([bcast.id, *(h.id for h in ordered)])
        for e in outs + into_stack:
            self.edges[self.index[e]] = None
        for e in spec.in_edges(bcast.id):  # the broadcast's input now feeds the fused node
            self.edges[self.index[e]] = dataclasses.replace(e, dst=stack.id)
        self.rebound[bcast.id] = stack.id

    # -- tied linear -> ce_logits cost ---------------------------------------------------------
    def fuse_lm_head(self, cost: NodeSpec) -> None:
        spec = self.spec
        if not isinstance(cost.impl, Cost) or cost.impl.cfg.cost_function != "ce_logits":
            return
        pred = [e for e in spec.in_edges(cost.id) if e.dst_slot == 0]
        if len(pred) != 1 or pred[0].src_slot != 0:
            return
        lin = spec.nodes[pred[0].src]
        if not isinstance(lin.impl, Linear) or not lin.impl.tied() or lin.impl.cfg.bias:
            return  # untied, or a bias tied_lm_head_ce does not have
        if spec.out_edges(lin.id) != pred or len(spec.in_edges(lin.id)) != 1:
            return  # the logits feed something else, or the linear takes a network input
        if cost.impl.cfg.cost_precision != "float32" and cost.activation_precision != "float32":
            return  # the cost computes in low precision; tied_lm_head_ce's cross-entropy is fp32
        allowed = {("inputs", 1), ("costs", 0), ("outputs", 0)}
        if any((kind, b.slot_id) not in allowed for kind, b in self._bindings(cost.id)):
            return
        if any(kind == "inputs" for kind, _ in self._bindings(lin.id)):
            return
        if not self._free(cost.id, lin.id):
            return
        lc = lin.impl.cfg
        cfg = TiedLMHeadCE.Config.model_validate({**_common(lc), "in_dim": lc.in_dim, "out_dim": lc.out_dim,
                                                  "cost_precision": "float32"})
        self.replaced[cost.id] = NodeSpec(
            id=cost.id, type="tied_lm_head_ce", impl=TiedLMHeadCE(cost.id, cfg),
            input_shapes=(lin.input_shapes[0], cost.input_shapes[1]), output_shapes=cost.output_shapes,
            param_precision=lin.param_precision, activation_precision=lin.activation_precision,
            symbolic_inputs=(lin.symbolic_inputs[:1] + cost.symbolic_inputs[1:2]
                             if lin.symbolic_inputs and cost.symbolic_inputs else ()),
            symbolic_outputs=cost.symbolic_outputs,
        )
        self.fused[cost.id] = (lin.id, cost.id)
        (feed,) = spec.in_edges(lin.id)
        moved = dataclasses.replace(feed, dst=cost.id, dst_slot=0)
        self.edges[self.index[pred[0]]] = None
        if self._bindings(lin.id):  # still a network output or metric: kept for inference
            self.inserted.setdefault(self.index[feed], []).append(moved)
        else:
            self.removed.add(lin.id)
            self.edges[self.index[feed]] = moved

    # -- result ------------------------------------------------------------------------------
    def build(self) -> ExecutionPlan:
        spec = self.spec
        if not self.fused:
            return ExecutionPlan(spec, spec, {}, {})
        nodes = {nid: self.replaced.get(nid, node) for nid, node in spec.nodes.items() if nid not in self.removed}
        edges: list[Edge] = []
        for i, e in enumerate(self.edges):
            if e is not None:
                edges.append(e)
            edges.extend(self.inserted.get(i, []))
        inputs = tuple(dataclasses.replace(b, node_id=self.rebound.get(b.node_id, b.node_id)) for b in spec.inputs)
        executed = dataclasses.replace(
            spec, nodes=nodes, edges=tuple(edges), inputs=inputs,
            # a fused node takes the place of its last written node, after all of its inputs
            topo_order=tuple(nid for nid in spec.topo_order if nid in nodes),
        )
        return ExecutionPlan(spec, executed, dict(self.fused), dict(self.parts))
