"""`tied_lm_head_ce` (alias `fusedlmheadce`): cross-entropy of x Wᵀ against targets.

W is the weight published under `tie_weight_alias` (the token embedding). The
[batch, seq, vocab] logits are never materialised: tokens are processed in chunks
of `chunk_tokens`. The loss is a scalar, so its gradient is the backward seed times
d(loss)/d(x, W): with fp32 weights (`cost_precision: float32` or an fp32 network) a
training forward computes both per chunk while the chunk's logits are at hand and
backward only scales them. In lower precision the unscaled gradients could underflow,
so forward keeps only the log-sum-exp per token and backward recomputes each chunk's
logits and scales before casting.
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
        w = self._weight(ctx)  # (V, D)
        x2 = x.reshape(-1, x.shape[-1]).to(w.dtype)  # (N, D)
        ids = target.reshape(-1).long()  # (N,)
        n = x2.shape[0]
        eager = ctx.training and w.dtype == torch.float32
        gx = torch.empty_like(x2) if eager else None  # d(loss)/dx (N, D)
        gw: torch.Tensor | None = None  # d(loss)/dW (V, D), from the first chunk on
        lse = torch.empty(n, dtype=torch.float32, device=x.device)  # (N,)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for sl in self._chunks(n):
            logits = (x2[sl] @ w.t()).float()  # (C, V): one chunk only, the one buffer of that size
            picked = logits.gather(1, ids[sl, None]).squeeze(1)  # (C,) logit of each target
            top = logits.amax(dim=-1, keepdim=True)  # (C, 1)
            e = logits.sub_(top).exp_()  # exp(logits - max), in place (C, V)
            sums = e.sum(dim=-1, keepdim=True)  # (C, 1)
            lse[sl] = (top + sums.log()).squeeze(1)  # log-sum-exp (C,)
            total += (lse[sl] - picked).sum()
            if gx is not None:
                d = e.div_(sums)  # softmax (C, V)
                d[torch.arange(d.shape[0], device=d.device), ids[sl]] -= 1.0
                d.mul_(1.0 / n)  # d(loss)/d(logits)
                gw = _add_chunk_grads(d, w, x2, sl, gx, gw)
        if ctx.training:
            ctx.save(x, ids, lse, gx, gw if gw is not None or gx is None else torch.zeros_like(w))  # no tokens: 0
        return [(total / n).to(x.dtype if self.cfg.cost_precision != "float32" else torch.float32)]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        x, ids, lse, gx, gw = ctx.saved
        (gy,) = gys
        assert gy is not None
        if gx is not None:  # computed by forward for a seed of 1, and used by nobody else: scaled in place
            scale = gy.float()
            ctx.add_grad("weight", gw.mul_(scale).to(ctx.params["weight"].dtype))
            return [gx.mul_(scale).reshape(x.shape).to(x.dtype), None]
        w = self._weight(ctx)
        x2 = x.reshape(-1, x.shape[-1]).to(w.dtype)  # (N, D)
        gx = torch.empty_like(x2)
        gw = None
        for sl in self._chunks(x2.shape[0]):
            logits = (x2[sl] @ w.t()).float()  # (C, V), recomputed
            d = _dlogits(logits, lse[sl], ids[sl], gy.float() / x2.shape[0]).to(w.dtype)
            gw = _add_chunk_grads(d, w, x2, sl, gx, gw)
        gw = gw if gw is not None else torch.zeros_like(w)  # no tokens
        ctx.add_grad("weight", gw.to(ctx.params["weight"].dtype))
        return [gx.reshape(x.shape).to(x.dtype), None]


def _dlogits(logits: torch.Tensor, lse: torch.Tensor, ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(softmax(logits) - onehot(ids)) · scale, computed in place in `logits` (C, V)."""
    p = logits.sub_(lse[:, None]).exp_()  # softmax (C, V)
    p[torch.arange(p.shape[0], device=p.device), ids] -= 1.0
    return p.mul_(scale)


def _add_chunk_grads(d: torch.Tensor, w: torch.Tensor, x2: torch.Tensor, sl: slice, gx: torch.Tensor,
                     gw: torch.Tensor | None) -> torch.Tensor:
    """One chunk's share of the gradients, written in place (no [V, D] temporary): gx[sl] = d W
    and gw += dᵀ x2[sl], the first chunk's product becoming gw. Returns gw."""
    torch.mm(d, w, out=gx[sl])  # (C, D)
    return d.t() @ x2[sl] if gw is None else gw.addmm_(d.t(), x2[sl])  # (V, D)
