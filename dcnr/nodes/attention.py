"""`attention` (alias `multiheadattention`): all heads of a layer in one node.

Same math as `num_heads` × `attention_head` followed by `stack` (and, with
`output_projection`, a bias-free `linear` back to `dim`).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F

from dcnr.errors import ShapeError
from dcnr.nodes.base import AutogradNode, Context, NodeConfig, Shape, uniform_fan_in
from dcnr.nodes.rope import apply_rope
from dcnr.nodes.values import Bool, PositiveFloat, PositiveInt, choice
from dcnr.shapes import SymShape, exact, require


class Attention(AutogradNode):
    class Config(NodeConfig):
        num_heads: PositiveInt
        head_dim: PositiveInt
        dim: PositiveInt
        seq_len: PositiveInt
        causal: Bool = True
        position_encoding: Annotated[str, choice("rope", "none")] = "rope"
        rope_theta: PositiveFloat = 10000.0
        output_projection: Bool = True

    cfg: Config

    @property
    def inner(self) -> int:
        return self.cfg.num_heads * self.cfg.head_dim

    def default_input_shape(self, slot: int) -> SymShape | None:
        return exact((self.cfg.seq_len, self.cfg.dim))

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        if self.cfg.position_encoding == "rope" and self.cfg.head_dim % 2:
            raise ShapeError(f"rope needs an even head_dim, got {self.cfg.head_dim}")
        seq, _ = require(inputs, 0, rank=2, last=self.cfg.dim, what=" (dim)").dims  # [S, D]
        return [SymShape((seq, self.cfg.dim if self.cfg.output_projection else self.inner))]  # [S, D | H·hd]

    def param_shapes(self) -> dict[str, Shape]:
        qkv = (self.inner, self.cfg.dim)
        shapes: dict[str, Shape] = {"q.weight": qkv, "k.weight": qkv, "v.weight": qkv}
        if self.cfg.output_projection:
            shapes["o.weight"] = (self.cfg.dim, self.inner)
        return shapes

    def init_param(self, name: str, shape: Shape, gen: torch.Generator) -> torch.Tensor:
        return uniform_fan_in(shape, shape[1], gen)

    def compute(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs  # (B, S, D)
        p, h, hd = ctx.params, self.cfg.num_heads, self.cfg.head_dim
        b, s, _ = x.shape

        def heads(w: torch.Tensor) -> torch.Tensor:
            return F.linear(x, w).view(b, s, h, hd).transpose(1, 2)  # (B, H, S, hd)

        q, k, v = heads(p["q.weight"]), heads(p["k.weight"]), heads(p["v.weight"])
        if self.cfg.position_encoding == "rope":
            q, k = apply_rope(q, self.cfg.rope_theta), apply_rope(k, self.cfg.rope_theta)
        scale = 1.0 / math.sqrt(hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.cfg.causal, scale=scale)
        y = y.transpose(1, 2).reshape(b, s, h * hd)  # (B, S, H·hd), heads in order
        if self.cfg.output_projection:
            y = F.linear(y, p["o.weight"])  # (B, S, D)
        return [y]
