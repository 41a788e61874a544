"""`attention_head` (alias `singleheadattention`): one causal self-attention head.

q, k, v = x W_qᵀ, x W_kᵀ, x W_vᵀ; RoPE on q and k; softmax(q kᵀ / √d + mask) v.
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


class AttentionHead(AutogradNode):
    class Config(NodeConfig):
        head_dim: PositiveInt
        input_dim: PositiveInt
        seq_len: PositiveInt
        causal: Bool = True
        position_encoding: Annotated[str, choice("rope", "none")] = "rope"
        rope_theta: PositiveFloat = 10000.0

    cfg: Config

    def default_input_shape(self, slot: int) -> SymShape | None:
        return exact((self.cfg.seq_len, self.cfg.input_dim))

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        if self.cfg.position_encoding == "rope" and self.cfg.head_dim % 2:
            raise ShapeError(f"rope needs an even head_dim, got {self.cfg.head_dim}")
        seq, _ = require(inputs, 0, rank=2, last=self.cfg.input_dim, what=" (input_dim)").dims  # [S, D]
        return [SymShape((seq, self.cfg.head_dim))]  # [S, hd]

    def param_shapes(self) -> dict[str, Shape]:
        shape = (self.cfg.head_dim, self.cfg.input_dim)
        return {"q.weight": shape, "k.weight": shape, "v.weight": shape}

    def init_param(self, name: str, shape: Shape, gen: torch.Generator) -> torch.Tensor:
        return uniform_fan_in(shape, self.cfg.input_dim, gen)

    def compute(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs  # (B, S, D)
        p, hd = ctx.params, self.cfg.head_dim
        b, s, _ = x.shape
        # one matmul for q, k and v (their weights stacked), then views of the result
        qkv = F.linear(x, torch.cat([p["q.weight"], p["k.weight"], p["v.weight"]])).view(b, s, 3, hd)
        qk, v = qkv.split([2, 1], dim=2)  # (B, S, 2, hd), (B, S, 1, hd)
        if self.cfg.position_encoding == "rope":
            qk = apply_rope(qk, self.cfg.rope_theta, seq_dim=-3)  # q and k at once
        q, k = qk.unbind(2)
        scale = 1.0 / math.sqrt(self.cfg.head_dim)
        # (B, 1, S, hd): a 4-D call takes SDPA's fused CPU kernel instead of the unfused 3-D fallback
        y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.transpose(1, 2),
                                           is_causal=self.cfg.causal, scale=scale)
        return [y.squeeze(1)]  # (B, S, hd)

