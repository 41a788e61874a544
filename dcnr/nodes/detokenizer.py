"""`detokenizer`: token ids -> text with a `tokenizers` vocabulary (not differentiable)."""

from __future__ import annotations

from functools import cached_property

import torch
from tokenizers import Tokenizer

from dcnr.nodes.base import Context, NodeConfig, NodeType, Shape
from dcnr.nodes.tokenizer import load_vocabulary
from dcnr.nodes.values import Name, PositiveInt


class Detokenizer(NodeType):
    differentiable = False

    class Config(NodeConfig):
        vocab_size: PositiveInt
        vocab_path: Name

    cfg: Config

    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        return [None]  # text has no tensor shape

    @cached_property
    def vocab(self) -> Tokenizer:
        return load_vocabulary(self.cfg.vocab_path, self.node_id, self.cfg.vocab_size)

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[list[str]]:
        (ids,) = xs  # (B, S)
        rows = ids.reshape(ids.shape[0], -1).tolist()
        return [self.vocab.decode_batch(rows, skip_special_tokens=True)]
