"""`detokenizer`: token ids -> text with a `tokenizers` vocabulary (not differentiable)."""

from __future__ import annotations

import torch

from dcnr.nodes.base import Context, NodeType
from dcnr.nodes.shapes import SymShape, tensor
from dcnr.nodes.tokenizer import VocabularyConfig


class Detokenizer(NodeType):
    differentiable = False

    class Config(VocabularyConfig):
        pass

    cfg: Config

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        tensor(inputs, 0)  # ids of any shape: each sample's ids are one text
        return [None]  # text has no tensor shape

    def forward(self, ctx: Context, xs: list[torch.Tensor]) -> list[list[str]]:
        (ids,) = xs  # (B, S)
        rows = ids.reshape(ids.shape[0], -1).tolist()
        assert ctx.vocabularies is not None, "the runtime gives every context its vocabularies"
        return [ctx.vocabularies.load(self.cfg, self.node_id).decode_batch(rows, skip_special_tokens=True)]
