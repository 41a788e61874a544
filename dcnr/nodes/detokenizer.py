"""`detokenizer`: token ids -> text with a `tokenizers` vocabulary (not differentiable)."""

from __future__ import annotations

from functools import cached_property

import torch
from tokenizers import Tokenizer

from dcnr.nodes.base import Context, NodeType, Shape
from dcnr.nodes.tokenizer import VocabularyConfig, load_vocabulary


class Detokenizer(NodeType):
    differentiable = False

    class Config(VocabularyConfig):
        pass

    cfg: Config

    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        return [None]  # text has no tensor shape

    @cached_property
    def vocab(self) -> Tokenizer:
        return load_vocabulary(self.cfg, self.node_id)

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[list[str]]:
        (ids,) = xs  # (B, S)
        rows = ids.reshape(ids.shape[0], -1).tolist()
        return [self.vocab.decode_batch(rows, skip_special_tokens=True)]
