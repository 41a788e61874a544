"""`reshape`: reshape to `target_shape` (batch axis kept; one -1 may be inferred)."""

from __future__ import annotations

import math

import torch

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeConfig, NodeType
from dcnr.nodes.values import ShapeValue
from dcnr.shapes import SymShape, known_size, tensor


class Reshape(NodeType):
    class Config(NodeConfig):
        target_shape: ShapeValue

    cfg: Config

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        x = tensor(inputs, 0)
        target = self.cfg.target_shape
        fixed = math.prod(d for d in target if d != -1)  # elements the target fixes
        n, whole = known_size(x)  # x holds n elements, or a multiple of n when not whole
        if whole and -1 in target:
            if n % fixed:
                raise ShapeError(f"cannot reshape {x} to target_shape {list(target)}")
            return [SymShape(tuple(n // fixed if d == -1 else d for d in target))]
        if whole and fixed != n:
            raise ShapeError(f"cannot reshape {x} ({n} elements) to target_shape {list(target)}")
        if -1 not in target and fixed % n:
            raise ShapeError(f"cannot reshape {x} (a multiple of {n} elements) to target_shape {list(target)} "
                             f"({fixed} elements)")
        return [SymShape(tuple("N" if d == -1 else d for d in target))]

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
