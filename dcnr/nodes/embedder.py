"""`embedder`: token ids -> E[ids] (+ P[0:seq] when position_encoding is learned).

With `rope` or `none` no position table exists here; `rope` is applied by attention.
"""

from __future__ import annotations

from typing import Annotated

import torch

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeConfig, NodeType, Shape
from dcnr.nodes.values import PositiveFloat, PositiveInt, choice
from dcnr.shapes import SymShape, exact, require


class Embedder(NodeType):
    differentiable = True

    class Config(NodeConfig):
        vocab_size: PositiveInt
        dim: PositiveInt
        seq_len: PositiveInt
        position_encoding: Annotated[str, choice("learned", "rope", "none")] = "learned"
        rope_theta: PositiveFloat = 10000.0

    cfg: Config

    def default_input_shape(self, slot: int) -> SymShape | None:
        return exact((self.cfg.seq_len,))

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        (seq,) = require(inputs, 0, rank=1, what=" (token ids)").dims  # [S]
        if isinstance(seq, int) and seq > self.cfg.seq_len:
            raise ShapeError(f"input slot 0: {seq} tokens exceed seq_len {self.cfg.seq_len}")
        return [SymShape((seq, self.cfg.dim))]  # [S, D]

    def param_shapes(self) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {"weight": (self.cfg.vocab_size, self.cfg.dim)}
        if self.cfg.position_encoding == "learned":
            shapes["position"] = (self.cfg.seq_len, self.cfg.dim)
        return shapes

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (ids,) = xs  # (B, S) integer ids
        if ids.is_floating_point() or ids.dim() != 2:
            raise ValueError(f"embedder {self.node_id!r}: expected integer token ids of shape (batch, seq)")
        seq = ids.shape[1]
        if seq > self.cfg.seq_len:
            raise ValueError(f"embedder {self.node_id!r}: {seq} tokens exceed seq_len {self.cfg.seq_len}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.vocab_size):
            raise ValueError(
                f"embedder {self.node_id!r}: token id out of range [0, {self.cfg.vocab_size})"
            )
        y = ctx.params["weight"][ids]  # (B, S, D)
        if "position" in ctx.params:
            y = y + ctx.params["position"][:seq]  # (S, D) broadcast over B
        if ctx.training:
            ctx.save(ids)
        return [y]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        (ids,) = ctx.saved
        (gy,) = gys  # (B, S, D)
        assert gy is not None
        w = ctx.params["weight"]
        gw = torch.zeros_like(w).index_add_(0, ids.reshape(-1), gy.reshape(-1, gy.shape[-1]))
        ctx.add_grad("weight", gw)  # (V, D)
        if "position" in ctx.params:
            gp = torch.zeros_like(ctx.params["position"])
            gp[: ids.shape[1]] = gy.sum(0)  # (S, D)
            ctx.add_grad("position", gp)
        return [None]
