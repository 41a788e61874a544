"""`tied_lm_head_ce` (alias `fusedlmheadce`): cross-entropy of x Wᵀ against targets.

W is the weight published under `tie_weight_alias` (the token embedding). The
[batch, seq, vocab] logits are never materialised: tokens are processed in chunks
of `chunk_tokens`; forward keeps only the log-sum-exp per token and backward
recomputes each chunk's logits.
"""

from __future__ import annotations

import torch

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeConfig, NodeType, Shape
from dcnr.nodes.values import Name, PositiveInt, PrecisionValue
from dcnr.shapes import SymShape, require, tensor, unify


class TiedLMHeadCE(NodeType):
    is_cost = True

    class Config(NodeConfig):
        in_dim: PositiveInt
        out_dim: PositiveInt
        tie_weight_alias: Name
        chunk_tokens: PositiveInt = 1024
        cost_precision: PrecisionValue | None = None

    cfg: Config

    def fixed_inputs(self) -> int | None:
        return 2

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        x = require(inputs, 0, last=self.cfg.in_dim, what=" (in_dim)")  # [..., D]
        target = tensor(inputs, 1)  # [...] token ids
        if unify(target, x.without_last()) is None:
            raise ShapeError(f"input slot 1: expected target shape {x.without_last()}, got {target}")
        return [SymShape(())]  # scalar loss

    def param_shapes(self) -> dict[str, Shape]:
        return {"weight": (self.cfg.out_dim, self.cfg.in_dim)}

    def _chunks(self, n: int) -> list[slice]:
        c = self.cfg.chunk_tokens
        return [slice(i, min(i + c, n)) for i in range(0, n, c)]

    def _weight(self, ctx: Context) -> torch.Tensor:
        w = ctx.params["weight"]  # (V, D)
        return w.float() if self.cfg.cost_precision == "float32" else w

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        x, target = xs  # (B, S, D), (B, S)
        if target.is_floating_point():
            raise ValueError(f"{self.node_id!r}: needs integer target ids")
        w = self._weight(ctx)
        x2 = x.reshape(-1, x.shape[-1]).to(w.dtype)  # (N, D)
        ids = target.reshape(-1).long()  # (N,)
        lse = torch.empty(x2.shape[0], dtype=torch.float32, device=x.device)  # (N,)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for sl in self._chunks(x2.shape[0]):
            logits = (x2[sl] @ w.t()).float()  # (C, V): one chunk only
            lse[sl] = torch.logsumexp(logits, dim=-1)
            total += (lse[sl] - logits.gather(1, ids[sl, None]).squeeze(1)).sum()
        if ctx.training:
            ctx.save(x, ids, lse)
        return [(total / x2.shape[0]).to(x.dtype if self.cfg.cost_precision != "float32" else torch.float32)]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        x, ids, lse = ctx.saved
        (gy,) = gys
        assert gy is not None
        w = self._weight(ctx)
        x2 = x.reshape(-1, x.shape[-1]).to(w.dtype)  # (N, D)
        scale = gy.float() / x2.shape[0]
        gx = torch.empty_like(x2)
        gw = torch.zeros_like(w)
        for sl in self._chunks(x2.shape[0]):
            p = torch.exp((x2[sl] @ w.t()).float() - lse[sl, None])  # softmax (C, V)
            p[torch.arange(p.shape[0], device=p.device), ids[sl]] -= 1.0
            d = (p * scale).to(w.dtype)  # dL/dlogits (C, V)
            gx[sl] = d @ w
            gw += d.t() @ x2[sl]
        ctx.add_grad("weight", gw.to(ctx.params["weight"].dtype))
        return [gx.reshape(x.shape).to(x.dtype), None]
