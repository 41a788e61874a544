"""`relu`: max(x, 0)."""

from __future__ import annotations

import torch

from dcnr.nodes.elementwise import Elementwise


class ReLU(Elementwise):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def df(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)
