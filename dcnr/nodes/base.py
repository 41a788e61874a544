"""What every node type is: a config model, a shape rule, parameters, forward, backward.

A node type is pure math. It never sees another node, a file or a socket: its
forward gets this request's inputs and its parameters through a `Context`, its
backward gets the gradients of its outputs and the same `Context` (holding what
forward saved) and returns the gradients of its inputs, adding parameter gradients
to the context. That is gradient locality (SPEC §2) made into an interface.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from dcnr.nodes.values import (
    Betas,
    Name,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PrecisionValue,
    ShapeValue,
    choice,
)
from dcnr.shapes import ANY, SymShape, tensor

if TYPE_CHECKING:
    from dcnr.data.vocabularies import Vocabularies

Shape = tuple[int, ...]
Value = Any  # a tensor, or a list of strings for text nodes


class NodeConfig(BaseModel):
    """Keys understood by every node type (SPEC §3); each type adds its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # optimizer of this node's own parameters
    optimizer: Annotated[str, choice("adam", "adamw", "sgd")] = "adam"
    lr: PositiveFloat = 1e-3
    betas: Betas = (0.9, 0.999)
    weight_decay: NonNegativeFloat = 0.0
    momentum: NonNegativeFloat = 0.0  # sgd only
    # learning-rate schedule: lr * factor(step)
    lr_schedule: Annotated[str, choice("constant", "linear_warmup", "cosine")] = "constant"
    warmup_steps: NonNegativeInt = 0  # linear ramp from lr/warmup to lr
    decay_steps: NonNegativeInt = 0  # cosine: steps after warmup to reach min_lr
    min_lr: NonNegativeFloat = 0.0
    # precision (None: inherit from the network)
    precision: PrecisionValue | None = None
    param_precision: PrecisionValue | None = None
    activation_precision: PrecisionValue | None = None
    # placement
    colocate_group: Name | None = None
    colocate_policy: Annotated[str, choice("preferred", "required")] = "preferred"
    # weight sharing: publish my `weight` under a name / use a published one
    shared_weight_alias: Name | None = None
    tie_weight_alias: Name | None = None
    # declared shapes of slot 0 (checked against inference)
    input_shape: ShapeValue | None = None
    output_shape: ShapeValue | None = None


def stable_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on `parts` (never on process or placement)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class Context:
    """One request's view of a node: parameters, saved tensors, RNG, grads out."""

    params: dict[str, torch.Tensor]  # compute-dtype parameters, by local name
    training: bool
    seed_parts: tuple[object, ...]  # (network seed, node id, step, micro-batch)
    saved: tuple[Any, ...] = ()
    param_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    vocabularies: Vocabularies | None = None  # where text nodes get their vocabulary (given by the runtime)

    def save(self, *values: Any) -> None:
        self.saved = values

    def add_grad(self, name: str, grad: torch.Tensor) -> None:
        assert name in self.params, f"gradient for unknown parameter {name}"
        if name in self.param_grads:
            self.param_grads[name] = self.param_grads[name] + grad
        else:
            self.param_grads[name] = grad

    def generator(self, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device=device)
        gen.manual_seed(stable_seed(*self.seed_parts))
        return gen


class NodeType:
    """Base class of the catalog. Subclasses set `Config` and override the math.

    An instance is built once, by validation, and refuses any later assignment: what runs
    is what was validated. Per-run needs (a vocabulary) come through the `Context`.
    """

    Config: ClassVar[type[NodeConfig]] = NodeConfig
    is_cost: ClassVar[bool] = False  # starts the backward pass (SPEC §2)
    differentiable: ClassVar[bool] = True

    node_id: str
    cfg: NodeConfig
    num_inputs: int

    def __init__(self, node_id: str, cfg: NodeConfig, num_inputs: int | None = None) -> None:
        """`num_inputs` is needed only where `fixed_inputs()` is None (the edges decide it)."""
        object.__setattr__(self, "node_id", node_id)
        object.__setattr__(self, "cfg", cfg)
        fixed = self.fixed_inputs()
        object.__setattr__(self, "num_inputs", fixed if fixed is not None else (num_inputs or 0))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"node {self.node_id!r} is immutable once validated (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"node {self.node_id!r} is immutable once validated (tried to delete {name!r})")

    # -- structure -------------------------------------------------------------
    def fixed_inputs(self) -> int | None:
        """Number of input slots, or None when it is given by the edges."""
        return 1

    def min_inputs(self) -> int:
        return 1

    @property
    def num_outputs(self) -> int:
        return 1

    def default_input_shape(self, slot: int) -> SymShape | None:
        """What a network input bound to `slot` holds when the file declares no shape: for a
        sequence, the longest the config allows (what memory estimates plan for); None: text."""
        return ANY

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        """Output shapes from input shapes (see `dcnr.shapes`); raises `ShapeError` on
        a mismatch of known axes. The default keeps the shape of the one input tensor."""
        return [tensor(inputs, 0)]

    def param_shapes(self) -> dict[str, Shape]:
        """Every parameter this node computes with, tied ones included."""
        return {}

    def tied(self) -> dict[str, str]:
        """Parameters taken from a published alias: local name -> alias."""
        alias = self.cfg.tie_weight_alias
        return {"weight": alias} if alias and "weight" in self.param_shapes() else {}

    def published(self) -> dict[str, str]:
        """Parameters this node publishes: alias -> local name."""
        alias = self.cfg.shared_weight_alias
        return {alias: "weight"} if alias and "weight" in self.param_shapes() else {}

    def init_param(self, name: str, shape: Shape, gen: torch.Generator) -> torch.Tensor:
        """Initial fp32 value of one owned parameter (default: N(0, 0.02))."""
        return torch.randn(shape, generator=gen) * 0.02

    # -- math ------------------------------------------------------------------
    def forward(self, ctx: Context, xs: list[Value]) -> list[Value]:
        raise NotImplementedError

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        raise NotImplementedError


class AutogradNode(NodeType):
    """A node whose backward is torch autograd over its *own* local graph.

    `compute` is written once; in training the inputs and parameters become leaves
    of a graph that lives in this node's context only, so the backward still uses
    nothing but local state and the gradients that arrive from downstream.
    """

    def compute(self, ctx: Context, xs: list[Value]) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, ctx: Context, xs: list[Value]) -> list[Value]:
        if not ctx.training or not self.differentiable:
            with torch.no_grad():
                return list(self.compute(ctx, xs))
        leaves_in = [
            x.detach().requires_grad_() if _is_float(x) else x for x in xs
        ]
        params = {k: v.detach().requires_grad_() for k, v in ctx.params.items()}
        local = Context(params, ctx.training, ctx.seed_parts)
        with torch.enable_grad():
            ys = self.compute(local, leaves_in)
        ctx.save(leaves_in, params, ys)
        return [y.detach() for y in ys]

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        leaves_in, params, ys = ctx.saved
        outs = [(y, g) for y, g in zip(ys, gys, strict=True) if g is not None and y.requires_grad]
        wrt_in = [i for i, x in enumerate(leaves_in) if isinstance(x, torch.Tensor) and x.requires_grad]
        names = list(params)
        grads_in: list[torch.Tensor | None] = [None] * len(leaves_in)
        if outs:
            got = torch.autograd.grad(
                [y for y, _ in outs],
                [leaves_in[i] for i in wrt_in] + [params[n] for n in names],
                [g for _, g in outs],
                allow_unused=True,
            )
            for i, g in zip(wrt_in, got[: len(wrt_in)], strict=True):
                grads_in[i] = g
            for n, g in zip(names, got[len(wrt_in) :], strict=True):
                if g is not None:
                    ctx.add_grad(n, g)
        ctx.saved = ()
        return grads_in


def sum_in_order(grads: Iterable[torch.Tensor | None]) -> torch.Tensor | None:
    """Sum the non-None gradients in the given order (a fixed summation order, SPEC §2).

    The first gradient is never written into: it may belong to a sender. Only a sum made
    here is added to in place.
    """
    total: torch.Tensor | None = None
    owned = False
    for g in grads:
        if g is None:
            continue
        if total is None:
            total = g
        elif owned:
            total.add_(g)
        else:
            total, owned = total + g, True
    return total


def _is_float(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def uniform_fan_in(shape: Shape, fan_in: int, gen: torch.Generator) -> torch.Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for linear layers."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound
