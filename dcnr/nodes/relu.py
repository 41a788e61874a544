"""`relu`: max(x, 0); gx = gy where x > 0, else 0."""

from __future__ import annotations

import torch

from dcnr.nodes.elementwise import Elementwise


class ReLU(Elementwise):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def grad(self, gy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return gy * (x > 0).to(gy.dtype)
