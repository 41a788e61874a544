"""`add`: the sum of its input slots (residual connections)."""

from __future__ import annotations

import torch

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeType, Shape


class Add(NodeType):
    def fixed_inputs(self) -> int | None:
        return None

    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        known = [s for s in inputs if s is not None]
        for i, s in enumerate(inputs):
            if s is not None and s != known[0]:
                raise ShapeError(f"input slot {i}: shape {list(s)} differs from {list(known[0])}")
        return [known[0] if known else None]

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        total = xs[0]
        for x in xs[1:]:  # slot order
            total = total + x
        return [total]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        (gy,) = gys
        return [gy] * self.num_inputs
