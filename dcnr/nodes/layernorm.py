"""`layernorm`: (x - mean) / sqrt(var + eps) * weight + bias over the last axis."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dcnr.nodes.base import AutogradNode, Context, NodeConfig, Shape
from dcnr.nodes.values import PositiveFloat, PositiveInt
from dcnr.shapes import SymShape, require


class LayerNorm(AutogradNode):
    class Config(NodeConfig):
        dim: PositiveInt
        eps: PositiveFloat = 1e-5

    cfg: Config

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        return [require(inputs, 0, last=self.cfg.dim, what=" (dim)")]  # [..., D] -> [..., D]

    def param_shapes(self) -> dict[str, Shape]:
        return {"weight": (self.cfg.dim,), "bias": (self.cfg.dim,)}

    def init_param(self, name: str, shape: Shape, gen: torch.Generator) -> torch.Tensor:
        return torch.ones(shape) if name == "weight" else torch.zeros(shape)

    def compute(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs  # (B, ..., D)
        p = ctx.params
        return [F.layer_norm(x, (self.cfg.dim,), p["weight"], p["bias"], self.cfg.eps)]
