"""`tokenizer`: text -> token ids with a `tokenizers` vocabulary (not differentiable).

Each text becomes `pad_length` ids: truncated, then right-padded with the
vocabulary's pad token (`<pad>`, else id 0). With `use_word_boundary_tokens` the
vocabulary's `<bos>`/`<eos>` tokens wrap each text. The vocabulary is a file
(`vocab_path`) or a vocabulary id stored by the orchestrator (`vocabulary`); the run
loads it through `Context.vocabularies` (see `dcnr.data.vocabularies`).
"""

from __future__ import annotations

import torch
from pydantic import model_validator
from tokenizers import Tokenizer

from dcnr.errors import ShapeError
from dcnr.nodes.base import Context, NodeConfig, NodeType
from dcnr.nodes.values import Bool, Name, PositiveInt
from dcnr.shapes import SymShape


class VocabularyConfig(NodeConfig):
    """`vocab_path` (a tokenizer JSON file) or `vocabulary` (an id stored by the orchestrator)."""

    vocab_size: PositiveInt
    vocab_path: Name | None = None
    vocabulary: Name | None = None

    @model_validator(mode="after")
    def _one_source(self) -> VocabularyConfig:
        if (self.vocab_path is None) == (self.vocabulary is None):
            raise ValueError("expected exactly one of vocab_path (a file) or vocabulary (a stored vocabulary id)")
        return self


def load_vocabulary(ctx: Context, cfg: VocabularyConfig, node_id: str) -> Tokenizer:
    """The vocabulary `cfg` names, from the run's `Vocabularies`, checked against `vocab_size`."""
    assert ctx.vocabularies is not None, "the runtime gives every context its vocabularies"
    tok = ctx.vocabularies.load(node_id, cfg.vocab_path, cfg.vocabulary)
    if tok.get_vocab_size() > cfg.vocab_size:
        name = cfg.vocabulary or cfg.vocab_path
        raise ValueError(f"{node_id!r}: vocabulary {name!r} has {tok.get_vocab_size()} tokens, more than "
                         f"vocab_size {cfg.vocab_size}")
    return tok


class TokenizerNode(NodeType):
    differentiable = False

    class Config(VocabularyConfig):
        pad_length: PositiveInt
        use_word_boundary_tokens: Bool = False

    cfg: Config

    def default_input_shape(self, slot: int) -> SymShape | None:
        return None  # text

    def infer_shapes(self, inputs: list[SymShape | None]) -> list[SymShape | None]:
        if inputs[0] is not None:
            raise ShapeError(f"input slot 0: expected text, got a tensor of shape {inputs[0]}")
        return [SymShape((self.cfg.pad_length,))]  # [pad_length] ids

    def forward(self, ctx: Context, xs: list[list[str]]) -> list[torch.Tensor]:
        (texts,) = xs
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"tokenizer {self.node_id!r}: expected a list of strings")
        tok = load_vocabulary(ctx, self.cfg, self.node_id)
        pad = tok.token_to_id("<pad>") or 0
        bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
        if self.cfg.use_word_boundary_tokens and (bos is None or eos is None):
            raise ValueError(f"tokenizer {self.node_id!r}: vocabulary has no <bos>/<eos> tokens")
        rows = []
        for enc in tok.encode_batch(list(texts), add_special_tokens=False):
            ids = list(enc.ids)
            if bos is not None and eos is not None and self.cfg.use_word_boundary_tokens:
                ids = [bos, *ids, eos]
            ids = ids[: self.cfg.pad_length]
            rows.append(ids + [pad] * (self.cfg.pad_length - len(ids)))
        return [torch.tensor(rows, dtype=torch.long).reshape(len(rows), self.cfg.pad_length)]
