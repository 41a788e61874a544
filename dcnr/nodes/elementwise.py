"""Shared shape of the parameter-free elementwise types: y = f(x), gx = gy · f'(x)."""

from __future__ import annotations

import torch

from dcnr.nodes.base import Context, NodeType


class Elementwise(NodeType):
    """Subclasses give `f` and `grad` (gy · f'(x), from the saved input)."""

    def f(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, gy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs
        if ctx.training:
            ctx.save(x)
        return [self.f(x)]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        (x,) = ctx.saved
        (gy,) = gys
        assert gy is not None
        return [self.grad(gy, x)]
