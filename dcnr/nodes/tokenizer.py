"""`tokenizer`: text -> token ids with a `tokenizers` vocabulary (not differentiable).

Each text becomes `pad_length` ids: truncated, then right-padded with the
vocabulary's pad token (`<pad>`, else id 0). With `use_word_boundary_tokens` the
vocabulary's `<bos>`/`<eos>` tokens wrap each text. The vocabulary is a file
(`vocab_path`) or a vocabulary id stored by the orchestrator (`vocabulary`), which the
hosting PNode resolves by setting the node's `vocabulary_source`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import torch
from pydantic import model_validator
from tokenizers import Tokenizer

from dcnr.nodes.base import Context, NodeConfig, NodeType, Shape
from dcnr.nodes.values import Bool, Name, PositiveInt

VocabularySource = Callable[[str], str]  # vocabulary id -> tokenizer JSON


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


def load_vocabulary(cfg: VocabularyConfig, node_id: str, source: VocabularySource | None) -> Tokenizer:
    """The configured vocabulary, checked against `vocab_size`; `source` resolves vocabulary ids."""
    if cfg.vocabulary is not None:
        if source is None:
            raise ValueError(f"{node_id!r}: vocabulary {cfg.vocabulary!r} is stored by an orchestrator; run the "
                             "network on a cluster, or give vocab_path")
        tok = Tokenizer.from_str(source(cfg.vocabulary))
        name = cfg.vocabulary
    else:
        assert cfg.vocab_path is not None
        if not Path(cfg.vocab_path).is_file():
            raise ValueError(f"{node_id!r}: vocab_path {cfg.vocab_path!r} does not exist")
        tok = Tokenizer.from_file(cfg.vocab_path)
        name = cfg.vocab_path
    if tok.get_vocab_size() > cfg.vocab_size:
        raise ValueError(
            f"{node_id!r}: vocabulary {name!r} has {tok.get_vocab_size()} tokens, more than vocab_size {cfg.vocab_size}"
        )
    return tok


class TokenizerNode(NodeType):
    differentiable = False

    class Config(VocabularyConfig):
        pad_length: PositiveInt
        use_word_boundary_tokens: Bool = False

    cfg: Config
    vocabulary_source: VocabularySource | None = None  # set by the hosting PNode

    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        return [(self.cfg.pad_length,)]

    @cached_property
    def vocab(self) -> Tokenizer:
        return load_vocabulary(self.cfg, self.node_id, self.vocabulary_source)

    def forward(self, ctx: Context, xs: list[list[str]]) -> list[torch.Tensor]:
        (texts,) = xs
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"tokenizer {self.node_id!r}: expected a list of strings")
        tok = self.vocab
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
