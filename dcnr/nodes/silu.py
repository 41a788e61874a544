"""`silu`: x · σ(x)."""

from __future__ import annotations

import torch

from dcnr.nodes.elementwise import Elementwise


def silu_grad(x: torch.Tensor) -> torch.Tensor:
    """d/dx [x σ(x)] = σ(x) (1 + x (1 - σ(x)))."""
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


class SiLU(Elementwise):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x)

    def df(self, x: torch.Tensor) -> torch.Tensor:
        return silu_grad(x)
