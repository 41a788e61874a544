"""`attention_head` (alias `singleheadattention`): one causal self-attention head.

q, k, v = x W_qᵀ, x W_kᵀ, x W_vᵀ; RoPE on q and k; softmax(q kᵀ / √d + mask) v.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F

from dcnr.nodes.base import AutogradNode, Context, NodeConfig, Shape, require_shape, uniform_fan_in
from dcnr.nodes.rope import apply_rope
from dcnr.errors import ShapeError
from dcnr.nodes.values import Bool, PositiveFloat, PositiveInt, choice


class AttentionHead(AutogradNode):
    class Config(NodeConfig):
        head_dim: PositiveInt
        input_dim: PositiveInt
        seq_len: PositiveInt
        causal: Bool = True
        position_encoding: Annotated[str, choice("rope", "none")] = "rope"
        rope_theta: PositiveFloat = 10000.0

    cfg: Config

    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        if self.cfg.position_encoding == "rope" and self.cfg.head_dim % 2:
            raise ShapeError(f"rope needs an even head_dim, got {self.cfg.head_dim}")
        shape = require_shape(inputs, 0, rank=2, last=self.cfg.input_dim, what=" (input_dim)")
        return [(shape[0] if shape else self.cfg.seq_len, self.cfg.head_dim)]

    def param_shapes(self) -> dict[str, Shape]:
        shape = (self.cfg.head_dim, self.cfg.input_dim)
        return {"q.weight": shape, "k.weight": shape, "v.weight": shape}

    def init_param(self, name: str, shape: Shape, gen: torch.Generator) -> torch.Tensor:
        return uniform_fan_in(shape, self.cfg.input_dim, gen)

    def compute(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs  # (B, S, D)
        p = ctx.params
        q = F.linear(x, p["q.weight"])  # (B, S, hd)
        k = F.linear(x, p["k.weight"])
        v = F.linear(x, p["v.weight"])
        if self.cfg.position_encoding == "rope":
            q, k = apply_rope(q, self.cfg.rope_theta), apply_rope(k, self.cfg.rope_theta)
        scale = 1.0 / math.sqrt(self.cfg.head_dim)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.cfg.causal, scale=scale)
        return [y]  # (B, S, hd)
