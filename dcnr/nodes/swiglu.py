"""`swiglu`: [.., 2n] -> [.., n]; a, g = split(x) (value first, gate second); a · silu(g)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeType
from dcnr.nodes.silu import silu_grad
from dcnr.shapes import SymShape, tensor


class SwiGLU(NodeType):
    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        x = tensor(inputs, 0)  # [..., 2n]
        last = x.dims[-1] if x.dims else None
        if (last is None and not x.open) or (isinstance(last, int) and last % 2):
            raise ShapeError(f"input slot 0: expected an even last axis, got shape {x}")
        if last is None:
            return [x]
        return [x.with_last(last // 2 if isinstance(last, int) else f"{last}/2")]  # [..., n]

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
