"""`detokenizer`: token ids -> text with a `tokenizers` vocabulary (not differentiable)."""

from __future__ import annotations

import torch

from dcnr.nodes.base import Context, NodeType
from dcnr.nodes.tokenizer import VocabularyConfig, load_vocabulary
from dcnr.shapes import SymShape, tensor


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
        return [load_vocabulary(ctx, self.cfg, self.node_id).decode_batch(rows, skip_special_tokens=True)]
