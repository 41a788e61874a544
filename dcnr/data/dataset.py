"""Tokenized datasets: one flat token array, split into train and validation.

Batches are a pure function of (dataset, seed, step): the same arguments give the
same batch in any process, which is what makes training reproducible (SPEC §2).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer

FORMAT = "dcnr-dataset/1"


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
        return hashlib.sha256(self.tokens.numpy().tobytes()).hexdigest()

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

    def save(self, path: str | Path) -> None:
        """Write the tokens as safetensors (atomically), with the split and hash as metadata."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        meta = {"format": FORMAT, "validation_fraction": repr(self.validation_fraction), "sha256": self.digest}
        save_file({"tokens": self.tokens.contiguous()}, str(tmp), metadata=meta)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> TokenDataset:
        """Read what `save` wrote; refuses other files and content whose hash does not match."""
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            if meta.get("format") != FORMAT or "tokens" not in names:
                raise ValueError(f"{path}: not a DCNR dataset")
            tokens = f.get_tensor("tokens")
        if tokens.dtype != torch.long or tokens.dim() != 1:
            raise ValueError(f"{path}: tokens must be a flat int64 array")
        ds = cls(tokens, float(meta["validation_fraction"]))
        if ds.digest != meta.get("sha256"):
            raise ValueError(f"{path}: content hash does not match its metadata (corrupt file)")
        return ds
