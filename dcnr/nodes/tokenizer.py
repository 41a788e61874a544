"""`tokenizer`: text -> token ids with a `tokenizers` vocabulary (not differentiable).

Each text becomes `pad_length` ids: truncated, then right-padded with the
vocabulary's pad token (`<pad>`, else id 0). With `use_word_boundary_tokens` the
vocabulary's `<bos>`/`<eos>` tokens wrap each text.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch
from tokenizers import Tokenizer

from dcnr.nodes.base import Context, NodeConfig, NodeType, Shape
from dcnr.nodes.values import Bool, Name, PositiveInt


def load_vocabulary(path: str, node_id: str, vocab_size: int) -> Tokenizer:
    """Load a `tokenizers` JSON file and check its size against the config."""
    if not Path(path).is_file():
        raise ValueError(f"{node_id!r}: vocab_path {path!r} does not exist")
    tok = Tokenizer.from_file(path)
    if tok.get_vocab_size() > vocab_size:
        raise ValueError(
            f"{node_id!r}: vocabulary {path!r} has {tok.get_vocab_size()} tokens, more than vocab_size {vocab_size}"
        )
    return tok


class TokenizerNode(NodeType):
    differentiable = False

    class Config(NodeConfig):
        vocab_size: PositiveInt
        pad_length: PositiveInt
        vocab_path: Name
        use_word_boundary_tokens: Bool = False

    cfg: Config

    def infer_shapes(self, inputs: list[Shape | None]) -> list[Shape | None]:
        return [(self.cfg.pad_length,)]

    @cached_property
    def vocab(self) -> Tokenizer:
        return load_vocabulary(self.cfg.vocab_path, self.node_id, self.cfg.vocab_size)

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
