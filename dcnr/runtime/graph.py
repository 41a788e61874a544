"""Graph facts the runtime needs, computed from a validated spec: which nodes a request must reach,
which take gradients, and how a batch is checked and split.

Shared by the `LocalExecutor`, the router, the PNode and the orchestrator's driver.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from dcnr.spec.model import NetworkSpec


def backward_set(spec: NetworkSpec) -> set[str]:
    """Nodes that receive a gradient: costs, and differentiable nodes upstream of one."""
    roots = {b.node_id for b in spec.costs}
    live = set(roots)
    for nid in reversed(spec.topo_order):
        node = spec.nodes[nid]
        if nid not in live and node.impl.differentiable and any(e.dst in live for e in spec.out_edges(nid)):
            live.add(nid)
    return live


def needed_nodes(spec: NetworkSpec, targets: Collection[str]) -> set[str]:
    """Nodes whose output the targets depend on (targets included)."""
    need = set(targets)
    for nid in reversed(spec.topo_order):
        if nid in need:
            need.update(e.src for e in spec.in_edges(nid))
    return need


def select_outputs(spec: NetworkSpec, given: set[str], outputs: Sequence[str] | None) -> list[str]:
    """The outputs to compute: those named (checked), or every one the given inputs allow."""
    by_name = {b.name: b for b in spec.outputs}
    if outputs is None:
        outputs = [name for name, b in by_name.items()
                   if all(i.name in given for i in spec.inputs if i.node_id in needed_nodes(spec, {b.node_id}))]
        if not outputs:
            raise ValueError("no network output can be computed from inputs "
                             f"{', '.join(map(repr, sorted(given))) or '(none)'}")
    for name in outputs:
        if name not in by_name:
            raise ValueError(f"unknown output {name!r}; outputs are {', '.join(map(repr, by_name))}")
    return list(outputs)


def check_inputs(spec: NetworkSpec, inputs: Mapping[str, Any], needed: set[str]) -> dict[str, Any]:
    """Inputs as batches; unknown names and missing needed inputs are errors."""
    names = {b.name for b in spec.inputs}
    unknown = sorted(set(inputs) - names)
    if unknown:
        raise ValueError(f"unknown input(s) {', '.join(map(repr, unknown))}; "
                         f"this network takes {', '.join(map(repr, sorted(names)))}")
    missing = sorted(b.name for b in spec.inputs if b.node_id in needed and b.name not in inputs)
    if missing:
        raise ValueError(f"missing input(s) {', '.join(map(repr, missing))}")
    return {k: _as_batch(k, v) for k, v in inputs.items()}


def _as_batch(name: str, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"input {name!r}: expected a tensor (or a list of strings), got {type(value).__name__}") from None


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    sizes = {k: (v.shape[0] if isinstance(v, torch.Tensor) and v.dim() else len(v)) for k, v in batch.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError("inputs have different batch sizes: "
                         + ", ".join(f"{k!r} {n}" for k, n in sorted(sizes.items())))
    for name, n in sizes.items():
        if n % parts:
            raise ValueError(f"input {name!r}: batch of {n} does not split into {parts} equal micro-batches")
    out = []
    for i in range(parts):
        chunk = {}
        for k, v in batch.items():
            size = sizes[k] // parts
            chunk[k] = v[i * size:(i + 1) * size]
        out.append(chunk)
    return out
