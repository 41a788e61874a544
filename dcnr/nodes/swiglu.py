"""`swiglu`: [.., 2n] -> [.., n]; a, g = split(x) (value first, gate second); a · silu(g)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeType, Shape
from dcnr.nodes.silu import silu_grad


class SwiGLU(NodeType):
    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        shape = inputs[0]
        if shape is None:
            return [None]
        if not shape or shape[-1] % 2:
            raise ShapeError(f"input slot 0: expected an even last axis, got shape {list(shape)}")
        return [(*shape[:-1], shape[-1] // 2)]

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs  # (B, ..., 2n)
        a, g = x.chunk(2, dim=-1)  # (B, ..., n) each
        if ctx.training:
            ctx.save(a, g)
        return [a * F.silu(g)]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        a, g = ctx.saved
        (gy,) = gys
        assert gy is not None
        return [torch.cat([gy * F.silu(g), silu_grad(gy * a, g)], dim=-1)]  # (B, ..., 2n)
