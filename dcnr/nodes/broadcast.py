"""`broadcast`: one input copied to `num_outputs` slots; backward sums the slots' grads."""

from __future__ import annotations

import torch

from dcnr.nodes.base import Context, NodeConfig, NodeType, sum_in_order
from dcnr.nodes.values import PositiveInt
from dcnr.shapes import SymShape


class Broadcast(NodeType):
    class Config(NodeConfig):
        num_outputs: PositiveInt = 2

    cfg: Config

    @property
    def num_outputs(self) -> int:
        return self.cfg.num_outputs

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        return [inputs[0]] * self.cfg.num_outputs  # any value, text included, is copied as is

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        (x,) = xs
        return [x] * self.cfg.num_outputs  # the same tensor: nodes never write into inputs

    def backward(self, ctx: Context, gys: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        return [sum_in_order(gys)]  # slot order: a fixed summation order
