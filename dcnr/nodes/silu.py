"""`silu`: y = x · σ(x); gx = gy · σ(x) (1 + x (1 - σ(x)))."""

from __future__ import annotations

import torch

from dcnr.nodes.elementwise import Elementwise


def silu_grad(gy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """gy · σ(x) (1 + x (1 - σ(x))) in one fused pass (ATen's kernel for this formula)."""
    return torch.ops.aten.silu_backward(gy, x)


class SiLU(Elementwise):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x)

    def grad(self, gy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return silu_grad(gy, x)
