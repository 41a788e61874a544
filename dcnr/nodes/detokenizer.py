"""`detokenizer`: token ids -> text with a `tokenizers` vocabulary (not differentiable)."""

from __future__ import annotations

from functools import cached_property

import torch
from tokenizers import Tokenizer

from dcnr.nodes.base import Context, NodeType, Shape
from dcnr.nodes.tokenizer import VocabularyConfig, VocabularySource, load_vocabulary


class Detokenizer(NodeType):
    differentiable = False

    class Config(VocabularyConfig):
        pass

    cfg: Config
    vocabulary_source: VocabularySource | None = None  # set by the hosting PNode

    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        return [None]  # text has no tensor shape

    @cached_property
    def vocab(self) -> Tokenizer:
        return load_vocabulary(self.cfg, self.node_id, self.vocabulary_source)

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[list[str]]:
        (ids,) = xs  # (B, S)
        rows = ids.reshape(ids.shape[0], -1).tolist()
        return [self.vocab.decode_batch(rows, skip_special_tokens=True)]
