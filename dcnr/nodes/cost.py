"""`cost`: a loss. Slot 0 is the prediction, slot 1 the target; output is a scalar.

- `mse`: mean over all elements of (pred - target)²;
- `ce`: pred holds probabilities [.., V], target ids [..]: mean of -log p[target];
- `ce_logits`: pred holds raw logits [.., V]: mean cross-entropy over tokens.
`cost_precision: float32` computes the loss in fp32 whatever the activations are.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F

from dcnr.errors import ShapeError
from dcnr.nodes.base import AutogradNode, Context, NodeConfig
from dcnr.nodes.values import PositiveInt, PrecisionValue, choice
from dcnr.shapes import SymShape, require, tensor, unify

_TINY = 1e-12  # keeps log() finite for probabilities that underflow to zero


class Cost(AutogradNode):
    is_cost = True

    class Config(NodeConfig):
        cost_function: Annotated[str, choice("mse", "ce", "ce_logits")] = "mse"
        vocab_size: PositiveInt | None = None
        in_dim: PositiveInt | None = None
        cost_precision: PrecisionValue | None = None

    cfg: Config

    def fixed_inputs(self) -> int | None:
        return 2

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        pred = tensor(inputs, 0)  # [..., V] for ce, any shape for mse
        for key in ("vocab_size", "in_dim"):
            want = getattr(self.cfg, key)
            if want is not None:
                pred = require([pred], 0, last=want, what=f" ({key})")
        if self.cfg.cost_function != "mse" and not pred.dims and not pred.open:
            raise ShapeError(f"input slot 0: expected a class axis for {self.cfg.cost_function}, got shape {pred}")
        target = tensor(inputs, 1)  # [...] like pred for mse, ids [..] for ce
        want_target = pred if self.cfg.cost_function == "mse" else pred.without_last()
        if unify(target, want_target) is None:
            raise ShapeError(f"input slot 1: expected target shape {want_target} for "
                             f"{self.cfg.cost_function} on prediction {pred}, got {target}")
        return [SymShape(())]  # scalar loss

    def compute(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        pred, target = xs
        if self.cfg.cost_precision == "float32":
            pred = pred.float()
        if self.cfg.cost_function == "mse":
            return [F.mse_loss(pred, target.to(pred.dtype))]
        if target.is_floating_point():
            raise ValueError(f"cost {self.node_id!r}: {self.cfg.cost_function} needs integer target ids")
        flat = pred.reshape(-1, pred.shape[-1])  # (N, V)
        ids = target.reshape(-1).long()  # (N,)
        if self.cfg.cost_function == "ce_logits":
            return [F.cross_entropy(flat, ids)]
        return [F.nll_loss(torch.log(flat.clamp_min(_TINY)), ids)]
