"""`stack`: concatenates its N input slots, in slot order, along `axis` (batch excluded)."""

from __future__ import annotations

import torch

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeConfig, NodeType, Shape
from dcnr.nodes.values import Int


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

    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        if any(s is None for s in inputs):
            return [None]
        shapes = [s for s in inputs if s is not None]
        axis = self._axis(len(shapes[0]))
        for i, s in enumerate(shapes):
            if len(s) != len(shapes[0]) or any(
                a != b for d, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if d != axis
            ):
                raise ShapeError(
                    f"input slot {i}: shape {list(s)} does not match slot 0 {list(shapes[0])} "
                    f"outside axis {self.cfg.axis}"
                )
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return [tuple(out)]

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
