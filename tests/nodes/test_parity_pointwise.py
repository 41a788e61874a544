"""Parity of `layernorm`, `relu`, `gelu`, `silu` and `swiglu` with plain PyTorch references."""

from __future__ import annotations

import math

import pytest
import torch

from dcnr import LocalExecutor

SHAPES = [(5, 6), (3, 2, 4)]  # per-sample shapes: rank 2, and rank 3 (through a reshape)


def ref_layernorm(eps: float):
    def f(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
        (x,) = xs
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as in layer norm
        return (x - mean) / torch.sqrt(var + eps) * p["weight"] + p["bias"]

    return f


def ref_relu(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
    (x,) = xs
    return torch.where(x > 0, x, torch.zeros_like(x))


def ref_gelu(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
    (x,) = xs
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))  # exact (erf) form


def ref_silu(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
    (x,) = xs
    return x / (1.0 + torch.exp(-x))


def ref_swiglu(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
    (x,) = xs
    n = x.shape[-1] // 2
    a, g = x[..., :n], x[..., n:]  # value first, gate second
    return a * (g / (1.0 + torch.exp(-g)))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_layernorm(kit, micro_batches: int, shape: tuple[int, ...], eps: float) -> None:
    """layernorm: values, input grads and weight/bias grads match a hand-written layer norm."""
    kit.run_parity("layernorm", {"dim": shape[-1], "eps": eps}, [shape], ref_layernorm(eps),
                   micro_batches=micro_batches, scale=1.0)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(("ntype", "ref"), [("relu", ref_relu), ("gelu", ref_gelu), ("silu", ref_silu)],
                         ids=["relu", "gelu", "silu"])
def test_elementwise(kit, micro_batches: int, shape: tuple[int, ...], ntype: str, ref) -> None:
    """relu/gelu(erf)/silu: values and input gradients match the written-out formulas."""
    kit.run_parity(ntype, {}, [shape], ref, micro_batches=micro_batches)


@pytest.mark.parametrize("shape", [(5, 8), (3, 2, 6)], ids=str)
def test_swiglu(kit, micro_batches: int, shape: tuple[int, ...]) -> None:
    """swiglu: [.., 2n] -> [.., n] = a·silu(g) with a the first half; values and input gradients."""
    run = kit.run_parity("swiglu", {}, [shape], ref_swiglu, micro_batches=micro_batches)
    assert run.spec.nodes["n"].output_shapes[0] == (*shape[:-1], shape[-1] // 2)


def test_gelu_is_exact_not_tanh(kit) -> None:
    """gelu uses the erf form: on a grid its values differ from the tanh approximation, and match erf."""
    x = torch.linspace(-4.0, 4.0, 81).reshape(1, 1, 81)
    spec = kit.network([kit.node("g", "gelu")], [], [kit.bind("x", "g")], outputs=[kit.bind("y", "g")])
    y = LocalExecutor(spec).forward({"x": x})["y"]
    xd = x.double()
    exact = xd * 0.5 * (1.0 + torch.erf(xd / math.sqrt(2.0)))
    tanh_form = 0.5 * xd * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (xd + 0.044715 * xd**3)))
    assert float((exact - tanh_form).abs().max()) > 10 * kit.ATOL  # the two forms are distinguishable here
    kit.check_close(y, exact.float())
