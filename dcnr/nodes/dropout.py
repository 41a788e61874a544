"""`dropout`: in training, zero each element with probability `rate`, scale the rest
by 1/(1-rate). The mask is drawn from a generator seeded by (network seed, node id,
step, micro-batch), so re-executing a request reproduces it exactly."""

from __future__ import annotations

import torch

from dcnr.nodes.base import Context, NodeConfig, NodeType
from dcnr.nodes.values import Probability


class Dropout(NodeType):
    class Config(NodeConfig):
        rate: Probability = 0.1

    cfg: Config

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs
        if not ctx.training or self.cfg.rate == 0.0:
            ctx.save(None)
            return [x]
        u = torch.rand(x.shape, generator=ctx.generator(x.device), device=x.device)
        keep = (u >= self.cfg.rate).to(x.dtype) / (1.0 - self.cfg.rate)  # mask · scale
        ctx.save(keep)
        return [x * keep]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        (keep,) = ctx.saved
        (gy,) = gys
        assert gy is not None
        return [gy if keep is None else gy * keep]
