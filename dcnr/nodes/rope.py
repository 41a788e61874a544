"""Rotary position embedding, rotate-half convention (pairs i and i + d/2).

x·cos + rotate_half(x)·sin with rotate_half(x) = cat(-x2, x1) is computed as
x·cos + roll(x, d/2)·cat(-sin, sin): the same products, since (-a)·b == a·(-b)
exactly in IEEE arithmetic, with one tensor op fewer and cached tables.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=64)
def rope_tables(seq: int, dim: int, theta: float, dtype: torch.dtype,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sign-folded sin for positions 0..seq-1, each (S, d)."""
    half = dim // 2
    with torch.inference_mode(False), torch.no_grad():  # cached: must stay usable under autograd
        inv = theta ** (-torch.arange(0, half, dtype=torch.float32, device=device) / half)  # (d/2,)
        angle = torch.arange(seq, dtype=torch.float32, device=device)[:, None] * inv  # (S, d/2)
        cos = torch.cat([angle.cos(), angle.cos()], -1).to(dtype)  # (S, d)
        sin = angle.sin().to(dtype)  # (S, d/2)
        signed_sin = torch.cat([-sin, sin], -1)  # (S, d)
    return cos, signed_sin


def apply_rope(x: torch.Tensor, theta: float, seq_dim: int = -2) -> torch.Tensor:
    """Rotate x (..., S, ..., d) by position along `seq_dim` (a negative axis); d must be even."""
    assert seq_dim < -1, "seq_dim counts from the end and cannot be the feature axis"
    seq, dim = x.shape[seq_dim], x.shape[-1]
    cos, signed_sin = rope_tables(seq, dim, theta, x.dtype, x.device)
    view = (seq, *([1] * (-seq_dim - 2)), dim)  # (S, 1.., d): broadcast over the axes after seq
    return x * cos.view(view) + x.roll(dim // 2, -1) * signed_sin.view(view)
