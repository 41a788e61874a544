"""Freivalds' check for matrix products: is C = A·B, without computing A·B?

For a random vector r, A(Br) costs two matrix-vector products instead of a matrix product, and
A(Br) = Cr holds exactly when C = AB up to rounding; a wrong C passes only if r happens to lie
in a set of measure zero. Floating-point rounding makes both sides differ a little, so the
difference is compared with a bound from the precision: rounding errors of a product of
inner dimension k behave like a random walk, so row i of Cr may differ by about
ε·√k·√(Σ_j r_j² Σ_l a_il² b_lj²) (ε of the dtype the product ran in); the check allows
`SLACK` times that. Measured on random products of many shapes, honest results stay below
0.6 of the unscaled bound, so `SLACK` = 8 leaves a wide margin, while noise of 1e-5 relative
to the operands is caught. Two random vectors are tried. Measured cost against recomputing
the product: benchmarks/bench_validation.py.

`check_linear` applies it to a `linear` node's forward (y = x Wᵀ + b) and backward
(∂x = ∂y W): the first line of a verifier of another compute class than the unit's host,
which cannot compare bits. It needs no product, but it reads every operand in float64: on
a CPU, at the shapes of SPEC §13's topologies (inner dimension 512-2048), that costs
1.1-1.8 times the float32 product itself (measured), so a verifier of the host's own class
replays bit for bit without it.
"""

from __future__ import annotations

import math

import torch

SLACK = 8.0  # honest rounding stays below 0.6 of the estimate (measured), so 8 is far from a false alarm
TINY = 1e-30
EPS = {torch.float32: torch.finfo(torch.float32).eps, torch.float16: torch.finfo(torch.float16).eps,
       torch.bfloat16: torch.finfo(torch.bfloat16).eps, torch.float64: torch.finfo(torch.float64).eps}


def product_matches(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, generator: torch.Generator,
                    compute_dtype: torch.dtype = torch.float32, offset: torch.Tensor | None = None,
                    rounds: int = 2) -> bool:
    """Whether `c` = `a` @ `b` (+ `offset`, broadcast over rows) within rounding, for 2-D `a` [m, k], `b` [k, n],
    tried with `rounds` random vectors."""
    a64, b64, c64 = a.double(), b.double(), c.double()
    eps = EPS.get(compute_dtype, EPS[torch.float32])
    r = torch.randn(b.shape[1], rounds, generator=generator, dtype=torch.float64)  # one vector per column
    diff = a64 @ (b64 @ r) - c64 @ r  # [m, rounds]
    spread = (a64 ** 2) @ ((b64 ** 2) @ (r ** 2))  # per row: sum over j of r_j^2 sum over l of (a_il b_lj)^2
    if offset is not None:
        diff = diff + offset.double().reshape(1, -1) @ r
        spread = spread + (offset.double() ** 2).reshape(1, -1) @ (r ** 2)
    return bool((diff.abs() <= SLACK * eps * math.sqrt(a.shape[1]) * spread.sqrt() + TINY).all())


def check_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor,
                 generator: torch.Generator, compute_dtype: torch.dtype = torch.float32) -> bool:
    """Whether `y` is `linear`'s forward of `x` ([..., in] -> [..., out]) with `weight` [out, in] and `bias`."""
    if y.shape[:-1] != x.shape[:-1] or y.shape[-1] != weight.shape[0] or x.shape[-1] != weight.shape[1]:
        return False
    return product_matches(x.reshape(-1, x.shape[-1]), weight.t(), y.reshape(-1, y.shape[-1]), generator,
                           compute_dtype, bias)


def check_linear_backward(grad_y: torch.Tensor, weight: torch.Tensor, grad_x: torch.Tensor,
                          generator: torch.Generator, compute_dtype: torch.dtype = torch.float32) -> bool:
    """Whether `grad_x` is `linear`'s input gradient for `grad_y`: ∂x = ∂y W."""
    if grad_x.shape[:-1] != grad_y.shape[:-1] or grad_x.shape[-1] != weight.shape[1]:
        return False
    return product_matches(grad_y.reshape(-1, grad_y.shape[-1]), weight, grad_x.reshape(-1, grad_x.shape[-1]),
                           generator, compute_dtype)
