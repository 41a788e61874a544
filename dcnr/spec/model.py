"""The validated network: what every later stage reads instead of raw YAML."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dcnr.nodes.base import NodeConfig, NodeType, Shape
    from dcnr.shapes import SymShape


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    src_slot: int = 0
    dst_slot: int = 0

    def __str__(self) -> str:
        return f"{self.src}[{self.src_slot}] -> {self.dst}[{self.dst_slot}]"


@dataclass(frozen=True)
class Binding:
    """A named network input, output, cost or metric, bound to one node slot."""

    name: str
    node_id: str
    slot_id: int = 0
    type: str | None = None  # metrics only, e.g. learning_rate


@dataclass(frozen=True)
class NodeSpec:
    id: str
    type: str  # canonical type name
    impl: NodeType  # the node type, built from its validated config
    input_shapes: tuple[Shape | None, ...]  # per slot, without the batch axis; None unless fully known
    output_shapes: tuple[Shape | None, ...]
    param_precision: str  # float32 | fp16 | bf16, after inheritance
    activation_precision: str
    # per slot, what inference knows: sizes and symbols (`dcnr.shapes`); None is text.
    # Empty for a node built without inference.
    symbolic_inputs: tuple[SymShape | None, ...] = ()
    symbolic_outputs: tuple[SymShape | None, ...] = ()

    @property
    def config(self) -> NodeConfig:
        return self.impl.cfg


@dataclass(frozen=True)
class NetworkSpec:
    """Immutable once built: the dataclass is frozen, `nodes` is a read-only mapping and
    each node's `impl` and `config` refuse assignment, so every stage reads what was validated."""

    name: str
    seed: int
    nodes: Mapping[str, NodeSpec]  # in file order; read-only
    edges: tuple[Edge, ...]
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]
    costs: tuple[Binding, ...]
    metrics: tuple[Binding, ...]
    source: str = ""  # the submitted YAML, verbatim
    path: str = "<string>"
    topo_order: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = ()  # one line each: a config key this network sets to no effect
    fuse: bool = True  # run the SPEC §6 passes (`dcnr.spec.passes.plan`) before execution
    validation: str = "sample:0.05"  # sessions' default validation policy (`dcnr.validation.policy`)

    def __post_init__(self) -> None:
        # a read-only view of a private copy: neither the caller's dict nor the view can change it
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))

    @functools.cached_property
    def _adjacency(self) -> tuple[dict[str, list[Edge]], dict[str, list[Edge]]]:
        """Incoming and outgoing edges per node, in edge order (computed once)."""
        ins: dict[str, list[Edge]] = {nid: [] for nid in self.nodes}
        outs: dict[str, list[Edge]] = {nid: [] for nid in self.nodes}
        for e in self.edges:
            ins[e.dst].append(e)
            outs[e.src].append(e)
        return ins, outs

    def in_edges(self, node_id: str) -> list[Edge]:
        return self._adjacency[0][node_id]

    def out_edges(self, node_id: str) -> list[Edge]:
        return self._adjacency[1][node_id]

    @functools.cached_property
    def _tie_groups(self) -> dict[str, frozenset[str]]:
        publishers = self.publishers()
        group: dict[str, set[str]] = {nid: {nid} for nid in self.nodes}
        for nid, node in self.nodes.items():
            for alias in node.impl.tied().values():
                merged = group[nid] | group[publishers[alias]]
                for member in merged:
                    group[member] = merged
        return {nid: frozenset(g) for nid, g in group.items()}

    def tie_group(self, node_id: str) -> frozenset[str]:
        """The node and every node sharing a tied weight with it: they always run together."""
        return self._tie_groups[node_id]

    def publishers(self) -> dict[str, str]:
        """alias -> id of the node that publishes it."""
        return {alias: n.id for n in self.nodes.values() for alias in n.impl.published()}

    def parameter_shapes(self) -> dict[str, Shape]:
        """Every stored parameter `<node_id>.<param>` (tied ones once, at the publisher)."""
        out: dict[str, Shape] = {}
        for n in self.nodes.values():
            tied = n.impl.tied()
            for pname, shape in n.impl.param_shapes().items():
                if pname not in tied:
                    out[f"{n.id}.{pname}"] = shape
        return out

    def num_parameters(self) -> int:
        total = 0
        for shape in self.parameter_shapes().values():
            count = 1
            for d in shape:
                count *= d
            total += count
        return total
