"""`linear` (alias `dense`): y = x Wᵀ + b."""

from __future__ import annotations

import torch

from dcnr.nodes.base import Context, NodeConfig, NodeType, Shape, uniform_fan_in
from dcnr.nodes.values import Bool, PositiveInt
from dcnr.shapes import SymShape, require


class Linear(NodeType):
    class Config(NodeConfig):
        in_dim: PositiveInt
        out_dim: PositiveInt
        bias: Bool = True

    cfg: Config

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        x = require(inputs, 0, last=self.cfg.in_dim, what=" (in_dim)")  # [..., in]
        return [x.with_last(self.cfg.out_dim)]  # [..., out]

    def param_shapes(self) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {"weight": (self.cfg.out_dim, self.cfg.in_dim)}
        if self.cfg.bias:
            shapes["bias"] = (self.cfg.out_dim,)
        return shapes

    def init_param(self, name: str, shape: Shape, gen: torch.Generator) -> torch.Tensor:
        return uniform_fan_in(shape, self.cfg.in_dim, gen)

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs  # (B, ..., in)
        w = ctx.params["weight"]  # (out, in)
        b = ctx.params.get("bias")
        y = torch.nn.functional.linear(x, w, b)  # (B, ..., out)
        if ctx.training:
            ctx.save(x)
        return [y]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        (x,) = ctx.saved
        (gy,) = gys  # (B, ..., out)
        assert gy is not None
        w = ctx.params["weight"]
        gy2 = gy.reshape(-1, gy.shape[-1])  # (N, out)
        ctx.add_grad("weight", gy2.t() @ x.reshape(-1, x.shape[-1]))  # (out, in)
        if "bias" in ctx.params:
            ctx.add_grad("bias", gy2.sum(0))  # (out,)
        return [gy @ w]  # (B, ..., in)
