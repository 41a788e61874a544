"""Tokenized datasets: one flat token array, split into train and validation.

Batches are a pure function of (dataset, seed, step): the same arguments give the
same batch in any process, which is what makes training reproducible (SPEC §2).
At rest the tokens are one safetensors tensor (`to_safetensors`); where they are
kept, and the split beside them, is the data store's business.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tokenizers import Tokenizer

from dcnr.errors import DataLoss


@dataclass(frozen=True)
class TokenDataset:
    tokens: torch.Tensor  # (N,) int64, documents joined by <eos>
    validation_fraction: float = 0.05

    @classmethod
    def from_texts(cls, texts: Iterable[str], vocab: Tokenizer, validation_fraction: float = 0.05) -> TokenDataset:
        eos = vocab.token_to_id("<eos>")
        ids: list[int] = []
        for enc in vocab.encode_batch(list(texts), add_special_tokens=False):
            ids.extend(enc.ids)
            if eos is not None:
                ids.append(eos)
        return cls(torch.tensor(ids, dtype=torch.long), validation_fraction)

    @functools.cached_property
    def digest(self) -> str:
        """Content hash: identifies the dataset in seeds and checkpoint metadata (computed once)."""
        return hashlib.sha256(self.tokens.contiguous().numpy().data).hexdigest()  # hashed in place, no copy

    def split(self, name: str) -> torch.Tensor:
        cut = int(len(self.tokens) * (1.0 - self.validation_fraction))
        if name == "train":
            return self.tokens[:cut]
        if name == "validation":
            return self.tokens[cut:]
        raise ValueError(f"unknown split {name!r}: expected train or validation")

    def batch(self, seed: int, step: int, batch_size: int, seq_len: int,
              split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch_size, seq_len): random windows, targets shifted by one."""
        data = self.split(split)
        if len(data) < seq_len + 1:
            raise ValueError(f"{split} split has {len(data)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
        key = hashlib.sha256(f"{self.digest}/{seed}/{step}/{split}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))
        starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=gen)  # (B,)
        idx = starts[:, None] + torch.arange(seq_len + 1)  # (B, S+1)
        window = data[idx]
        return window[:, :-1], window[:, 1:]

    def with_validation_fraction(self, validation_fraction: float) -> TokenDataset:
        """The same tokens split at another fraction (the hash is carried over, not recomputed)."""
        new = TokenDataset(self.tokens, validation_fraction)
        new.__dict__["digest"] = self.digest  # fills the cached_property
        return new

    def to_safetensors(self) -> bytes:
        """The tokens as safetensors bytes: one tensor, `tokens`, flat int64 (the split is not in it)."""
        return save_safetensors({"tokens": self.tokens.contiguous()})

    @classmethod
    def from_safetensors(cls, data: bytes, validation_fraction: float, sha256: str, source: str) -> TokenDataset:
        """Read what `to_safetensors` wrote; refuses (DataLoss) other content and tokens whose hash is
        not `sha256`. `source` names the bytes in the message."""
        try:
            tensors = load_safetensors(data)
        except Exception as exc:  # safetensors raises its own error type for damaged bytes
            raise DataLoss(f"{source}: not safetensors ({exc})") from None
        tokens = tensors.get("tokens")
        if set(tensors) != {"tokens"} or tokens is None or tokens.dtype != torch.long or tokens.dim() != 1:
            raise DataLoss(f"{source}: expected one flat int64 tensor 'tokens', found "
                           + (", ".join(f"{k} {tuple(t.shape)} {t.dtype}" for k, t in sorted(tensors.items()))
                              or "none"))
        ds = cls(tokens, validation_fraction)
        if ds.digest != sha256:
            raise DataLoss(f"{source}: tokens hash to {ds.digest[:12]}…, expected {sha256[:12]}…")
        return ds
