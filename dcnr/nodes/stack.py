"""`stack`: concatenates its N input slots, in slot order, along `axis` (batch excluded)."""

from __future__ import annotations

import torch

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeConfig, NodeType
from dcnr.nodes.values import Int
from dcnr.shapes import Dim, SymShape, merge_dim, tensor


class Stack(NodeType):
    class Config(NodeConfig):
        axis: Int = -1

    cfg: Config

    def fixed_inputs(self) -> int | None:
        return None

    def _axis(self, rank: int) -> int:
        axis = self.cfg.axis + rank if self.cfg.axis < 0 else self.cfg.axis
        if not 0 <= axis < rank:
            raise ShapeError(f"axis {self.cfg.axis} is out of range for {rank} axes")
        return axis

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        xs = [tensor(inputs, i) for i in range(len(inputs))]
        closed = [x for x in xs if not x.open]
        rank = len(closed[0].dims) if closed else max(len(x.dims) for x in xs)  # axes compared, from the end
        for i, x in enumerate(xs):
            if len(x.dims) > rank or (not x.open and len(x.dims) != rank):
                raise self._mismatch(i, xs)
        # which of the `rank` compared axes is the one concatenated: known, or only "one of the first"
        axis, maybe = None, range(0)
        if closed:
            axis = self._axis(rank)
        elif self.cfg.axis < 0:
            axis = rank + self.cfg.axis  # < 0: among the unknown axes, so every compared one must match
        else:  # counted from the front of an unknown number of axes: any of the first axis+1 compared ones
            maybe = range(min(self.cfg.axis + 1, rank))
        out: list[Dim] = []
        for d in range(rank):
            column = [x.dims[d - rank + len(x.dims)] if d - rank + len(x.dims) >= 0 else None for x in xs]
            if d == axis:
                sizes = [c for c in column if isinstance(c, int)]
                out.append(sum(sizes) if len(sizes) == len(column) else "+".join(str(c or "?") for c in column))
                continue
            if d in maybe:
                out.append("?")
                continue
            known = [(i, c) for i, c in enumerate(column) if c is not None]  # the longest input has every axis
            merged = known[0][1]
            for i, c in known[1:]:
                both = merge_dim(merged, c)
                if both is None:
                    raise self._mismatch(i, xs)
                merged = both
            out.append(merged)
        return [SymShape(tuple(out), open=not closed)]

    def _mismatch(self, slot: int, xs: list[SymShape]) -> ShapeError:
        return ShapeError(f"input slot {slot}: shape {xs[slot]} does not match slot 0 {xs[0]} "
                          f"outside axis {self.cfg.axis}")

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        dim = self._axis(xs[0].dim() - 1) + 1  # +1: skip the batch axis
        if ctx.training:
            ctx.save(dim, [x.shape[dim] for x in xs])
        return [torch.cat(xs, dim=dim)]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        dim, sizes = ctx.saved
        (gy,) = gys
        assert gy is not None
        return list(torch.split(gy, sizes, dim=dim))
