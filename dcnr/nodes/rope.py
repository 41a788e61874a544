"""Rotary position embedding, rotate-half convention (pairs i and i + d/2)."""

from __future__ import annotations

import torch


def apply_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate x of shape (..., S, d) by position 0..S-1; d must be even."""
    seq, dim = x.shape[-2], x.shape[-1]
    half = dim // 2
    inv = theta ** (-torch.arange(0, half, dtype=torch.float32, device=x.device) / half)  # (d/2,)
    angle = torch.arange(seq, dtype=torch.float32, device=x.device)[:, None] * inv  # (S, d/2)
    cos = torch.cat([angle.cos(), angle.cos()], -1).to(x.dtype)  # (S, d)
    sin = torch.cat([angle.sin(), angle.sin()], -1).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], -1) * sin
