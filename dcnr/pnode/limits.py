"""What a PNode accepts from others, and how much it keeps for them.

PNodes get placements, runs and hops from peers they have no reason to trust (SPEC §12).
The constants bound what arrives (a network's size, a run's micro-batches) and what waits
(hops for the compute thread or the network, requests half-done at a VNode); `Limits`
sizes the rest from the PNode's memory budget. `Expectations` says what value a hop may
carry on each input slot and gradient edge of a network, checked before it is queued:

- text where the network carries text, a tensor anywhere else;
- floats (float32, float16, bfloat16) out of a VNode that has parameters or computes on
  floats only, and as every gradient; ids or floats (no bool) where nothing upstream
  says which: network inputs, a tokenizer's ids, and what a VNode without parameters
  passes on from them (a broadcast copying ids);
- the rank, the batch axis first (a cost's scalar has none);
- every axis the node configs fix (a feature size) exactly, and every other axis the spec
  gives a size at most that long: a sequence may be shorter than its `seq_len`, as in
  generation, never longer;
- at most `Limits.max_hop_elements` elements, counting an empty axis as one (a node may
  allocate [S, S] for an empty [0, S, S]).

The axes the configs fix are found by inferring shapes again with every axis of the
network inputs unknown: an axis still known then comes from a config, not from an input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dcnr.errors import InvalidArgument, ShapeError
from dcnr.shapes import ANY, SymShape
from dcnr.spec.model import NetworkSpec

MAX_NETWORK_TEXT = 16 * 2**20  # characters of a placed network's YAML (a 96-block, 96-head transformer: ~4 Mi)
MAX_VNODES = 65536  # VNodes (assignments) and PNode addresses in one placement
MAX_VOCABULARIES = 1024  # stored vocabularies sent with one placement
MAX_MICRO_BATCHES = 1024  # micro-batches of one run
RUN_MEMORY = 1024  # runs remembered per network, and fenced runs per PNode: the oldest are forgotten
SEEN_MEMORY = 65536  # hop keys remembered for duplicate detection, the oldest forgotten
QUEUED_HOPS = 16384  # hops waiting for the compute thread: every input of the largest run, several times over
OUTBOX_HOPS = 4096  # hops waiting to be sent; the compute thread waits (up to the task timeout) when it is full
PENDING_PER_VNODE = 2 * MAX_MICRO_BATCHES  # requests one VNode holds unfinished work for: a step's, and as many
DEFAULT_BUDGET = 4 * 2**30  # bytes assumed for sizing when a PNode has no memory budget
MIN_HOP_ELEMENTS = 2**20  # however small the budget: a value of 4 MiB of float32 is always accepted
MIN_QUEUED_BYTES = 64 * 2**20  # however small the budget: this much may wait for the compute thread

FLOATS = frozenset({torch.float32, torch.float16, torch.bfloat16})
IDS_OR_FLOATS = FLOATS | {torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8}


@dataclass(frozen=True)
class Limits:
    """A PNode's bounds on what peers make it hold (see the module docstring)."""

    max_hop_elements: int  # elements of one value a peer sends (and its extent, empty axes counted as one)
    max_queued_bytes: int  # bytes of values waiting for the compute thread
    max_queued_hops: int = QUEUED_HOPS
    outbox_hops: int = OUTBOX_HOPS
    pending_per_vnode: int = PENDING_PER_VNODE

    @classmethod
    def for_budget(cls, memory_budget: int | None) -> Limits:
        """One value at most a quarter of the budget as float32, a quarter of it waiting in all."""
        budget = DEFAULT_BUDGET if memory_budget is None else memory_budget
        return cls(max_hop_elements=max(MIN_HOP_ELEMENTS, budget // 16),
                   max_queued_bytes=max(MIN_QUEUED_BYTES, budget // 4))


def value_bytes(value: Any) -> int:
    """Bytes a hop's value holds: a tensor's elements, a text batch's characters."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(len(v) for v in value if isinstance(v, str))
    return 0


@dataclass(frozen=True)
class _Expected:
    """What one input slot or gradient edge carries."""

    text: bool
    free: SymShape  # the axes the configs fix are ints; the others symbols
    known: SymShape  # the spec's shape: its ints bound the free axes at the same place
    batch: bool  # a batch axis leads (not after a cost)
    dtypes: frozenset[torch.dtype]

    def describe(self) -> str:
        if self.text:
            return "text (a list of strings)"
        dims = ["..."] if self.free.open else []
        dims += [self._axis(i) for i in range(len(self.free.dims))]
        kinds = "floats" if self.dtypes == FLOATS else "ids or floats"
        return f"{kinds} of shape [{', '.join((['batch'] if self.batch else []) + dims)}]"

    def _axis(self, i: int) -> str:
        fixed, bound = self.free.dims[i], self._bound(i)
        return str(fixed) if isinstance(fixed, int) else f"≤{bound}" if bound is not None else "any"

    def _bound(self, i: int) -> int | None:
        """The spec's size of free axis `i` (counted from the end, where both shapes align), if it has one."""
        back = len(self.free.dims) - i
        if back > len(self.known.dims):
            return None
        size = self.known.dims[-back]
        return size if isinstance(size, int) else None

    def problem(self, value: Any, max_elements: int) -> str | None:
        """Why `value` does not fit, or None."""
        if self.text:
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                return f"got {type(value).__name__}"
            if max(len(value), value_bytes(value)) > max_elements:
                return f"got {len(value)} texts of {value_bytes(value)} characters in all, more than {max_elements}"
            return None
        if not isinstance(value, torch.Tensor):
            return f"got {type(value).__name__}"
        got = f"got {str(value.dtype).removeprefix('torch.')} of shape {list(value.shape)}"
        if value.dtype not in self.dtypes:
            return got
        lead = 1 if self.batch else 0
        dims = tuple(value.shape[lead:])
        n = len(self.free.dims)
        if value.dim() < lead + n or (value.dim() > lead + n and not self.free.open):
            return got
        for i, (have, fixed) in enumerate(zip(dims[len(dims) - n:], self.free.dims, strict=True)):
            bound = self._bound(i)
            if (isinstance(fixed, int) and have != fixed) or (bound is not None and have > bound):
                return got
        if value.numel() > max_elements or math.prod(max(d, 1) for d in value.shape) > max_elements:
            return f"{got}: more than {max_elements} elements (empty axes counted as one)"
        return None


class Expectations:
    """What each input slot and gradient edge of an executed network carries (see the module docstring)."""

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        shapes, floats = _free_shapes(spec)
        feeds = {(e.dst, e.dst_slot): e for e in spec.edges}
        self.inputs: dict[tuple[str, int], _Expected] = {}
        for nid, node in spec.nodes.items():
            for slot in range(node.impl.num_inputs):
                edge = feeds.get((nid, slot))
                free, known = shapes[nid][0][slot], _slot(node.symbolic_inputs, slot)
                after_cost = edge is not None and spec.nodes[edge.src].impl.is_cost
                is_float = edge is not None and floats[edge.src]
                self.inputs[(nid, slot)] = _expect(free, known, not after_cost, FLOATS if is_float else IDS_OR_FLOATS)
        self.gradients: dict[int, _Expected] = {}
        for index, e in enumerate(spec.edges):  # d(cost)/d(the value on edge e): its source's output
            src = spec.nodes[e.src]
            free, known = _slot(tuple(shapes[e.src][1]), e.src_slot), _slot(src.symbolic_outputs, e.src_slot)
            self.gradients[index] = _expect(free, known, not src.impl.is_cost, FLOATS)

    def check(self, op: str, vnode: str, index: int, value: Any, max_elements: int) -> None:
        """InvalidArgument unless `value` fits input slot `index` of `vnode` (op "fwd") or is a gradient
        for edge `index` leaving it (op "bwd"; None is a zero gradient). Slot and edge exist (checked before)."""
        if op == "bwd" and value is None:
            return
        expected = self.inputs[(vnode, index)] if op == "fwd" else self.gradients[index]
        problem = expected.problem(value, max_elements)
        if problem is not None:
            where = f"input slot {index}" if op == "fwd" else f"the gradient of edge {index} ({self.spec.edges[index]})"
            raise InvalidArgument(f"network {self.spec.name!r}, VNode {vnode!r}, {where}: expected "
                                  f"{expected.describe()}, {problem}")


def _expect(free: SymShape | None, known: SymShape | None, batch: bool, dtypes: frozenset[torch.dtype]) -> _Expected:
    if known is None:  # the validated spec carries text here
        return _Expected(True, ANY, ANY, batch, dtypes)
    return _Expected(False, free if free is not None else _unknown_axes(known), known, batch, dtypes)


def _slot(shapes: tuple[SymShape | None, ...], slot: int) -> SymShape | None:
    return shapes[slot] if slot < len(shapes) else ANY


def _unknown_axes(shape: SymShape) -> SymShape:
    """The same axes, none of them known."""
    return SymShape(tuple(f"N{i}" for i in range(len(shape.dims))), shape.open)


def _unknown(shape: SymShape | None) -> SymShape | None:
    return None if shape is None else _unknown_axes(shape)


def _free_shapes(spec: NetworkSpec) -> tuple[dict[str, tuple[list[SymShape | None], list[SymShape | None]]],
                                              dict[str, bool]]:
    """Every slot's shape with the network inputs' axes unknown, and whether each node's outputs are floats."""
    feeds = {(e.dst, e.dst_slot): e for e in spec.edges}
    shapes: dict[str, tuple[list[SymShape | None], list[SymShape | None]]] = {}
    floats: dict[str, bool] = {}
    order = list(spec.topo_order) + [nid for nid in spec.nodes if nid not in spec.topo_order]
    for nid in order:
        node = spec.nodes[nid]
        ins: list[SymShape | None] = []
        tensor_floats: list[bool] = []
        for slot in range(node.impl.num_inputs):
            edge = feeds.get((nid, slot))
            if edge is not None and edge.src in shapes:
                ins.append(_slot(tuple(shapes[edge.src][1]), edge.src_slot))
                tensor_floats.append(floats[edge.src])
            else:
                ins.append(_unknown(_slot(node.symbolic_inputs, slot)))
                tensor_floats.append(False)
            if ins[-1] is None:
                tensor_floats.pop()  # text
        try:
            outs = list(node.impl.infer_shapes(ins))
        except ShapeError:  # a rule that needs what the inputs no longer say: nothing fixed but the ranks
            outs = [_unknown(s) for s in node.symbolic_outputs]
        shapes[nid] = (ins, outs)
        floats[nid] = bool(node.impl.param_shapes()) or (bool(tensor_floats) and all(tensor_floats))
    return shapes, floats
