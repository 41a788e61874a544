"""`mask`: on attention scores [.., S, S], replace masked positions by `mask_val`.

`causal` masks j > i; `random_prob` masks each position with that probability in
training, drawn from a generator seeded by (seed or network seed, node id, step,
micro-batch). Masked positions get no gradient.
"""

from __future__ import annotations

import torch

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeConfig, NodeType
from dcnr.nodes.values import Bool, Float, Int, Probability
from dcnr.shapes import SymShape, tensor


class Mask(NodeType):
    class Config(NodeConfig):
        causal: Bool = True
        mask_val: Float = -1e9
        random_prob: Probability = 0.0
        seed: Int | None = None

    cfg: Config

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        x = tensor(inputs, 0)  # [..., S, S]
        rows, cols = (None, None, *x.dims)[-2:]
        if (len(x.dims) < 2 and not x.open) or (isinstance(rows, int) and isinstance(cols, int) and rows != cols):
            raise ShapeError(f"input slot 0: expected scores [.., S, S], got shape {x}")
        return [x]

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs  # (B, .., S, S)
        s = x.shape[-1]
        masked = torch.zeros(x.shape[-2:], dtype=torch.bool, device=x.device)  # (S, S)
        if self.cfg.causal:
            masked = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        masked = masked.expand(x.shape)
        if ctx.training and self.cfg.random_prob > 0:
            parts = ctx.seed_parts
            if self.cfg.seed is not None:
                parts = (self.cfg.seed, *parts[1:])
            gen = Context({}, True, parts).generator(x.device)
            u = torch.rand(x.shape, generator=gen, device=x.device)
            masked = masked | (u < self.cfg.random_prob)
        if ctx.training:
            ctx.save(masked)
        return [x.masked_fill(masked, self.cfg.mask_val)]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        (masked,) = ctx.saved
        (gy,) = gys
        assert gy is not None
        return [gy.masked_fill(masked, 0.0)]
