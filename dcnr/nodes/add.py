"""`add`: the sum of its input slots (residual connections)."""

from __future__ import annotations

import torch

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeType
from dcnr.shapes import SymShape, tensor, unify


class Add(NodeType):
    def fixed_inputs(self) -> int | None:
        return None

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        total = tensor(inputs, 0)  # what is known of the common shape, slot by slot
        for i in range(1, len(inputs)):
            x = tensor(inputs, i)
            merged = unify(total, x)
            if merged is None:
                raise ShapeError(f"input slot {i}: shape {x} differs from {total}")
            total = merged
        return [total]

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        total = xs[0]
        for x in xs[1:]:  # slot order
            total = total + x
        return [total]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        (gy,) = gys
        return [gy] * self.num_inputs
