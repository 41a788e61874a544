"""`gelu` (exact, erf form): y = x · Φ(x); gx = gy · (Φ(x) + x · φ(x))."""

from __future__ import annotations

import torch

from dcnr.nodes.elementwise import Elementwise


class GELU(Elementwise):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x)

    def grad(self, gy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # gy · (Φ(x) + x φ(x)) in one fused pass (ATen's kernel for exactly this formula)
        return torch.ops.aten.gelu_backward(gy, x, approximate="none")
