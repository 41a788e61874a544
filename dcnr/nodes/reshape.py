"""`reshape`: reshape to `target_shape` (batch axis kept; one -1 may be inferred)."""

from __future__ import annotations

import math

import torch

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeConfig, NodeType, Shape
from dcnr.nodes.values import ShapeValue


class Reshape(NodeType):
    class Config(NodeConfig):
        target_shape: ShapeValue

    cfg: Config

    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        shape = inputs[0]
        target = self.cfg.target_shape
        if shape is None:
            return [None if -1 in target else target]
        n = math.prod(shape)
        known = math.prod(d for d in target if d != -1)
        if -1 in target:
            if n % known:
                raise ShapeError(f"cannot reshape {list(shape)} to target_shape {list(target)}")
            target = tuple(n // known if d == -1 else d for d in target)
        elif known != n:
            raise ShapeError(f"cannot reshape {list(shape)} ({n} elements) to target_shape {list(target)}")
        return [target]

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs
        if ctx.training:
            ctx.save(x.shape)
        return [x.reshape(x.shape[0], *self.cfg.target_shape)]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        (shape,) = ctx.saved
        (gy,) = gys
        assert gy is not None
        return [gy.reshape(shape)]
