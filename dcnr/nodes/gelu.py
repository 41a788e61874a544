"""`gelu` (exact, erf form): x · Φ(x)."""

from __future__ import annotations

import math

import torch

from dcnr.nodes.elementwise import Elementwise


class GELU(Elementwise):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x)

    def df(self, x: torch.Tensor) -> torch.Tensor:
        cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))  # Φ(x)
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # φ(x)
        return cdf + x * pdf
