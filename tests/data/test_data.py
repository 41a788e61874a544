"""Corpora, BPE vocabularies and deterministic batches."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dcnr.data import TokenDataset, read_corpus, stdlib_corpus, train_vocabulary
from dcnr.data.vocab import MAX_VOCAB_SIZE
from dcnr.errors import DataLoss

TEXT = [f"def function_{i}(x):\n    return x * {i} + {i % 5}\n" for i in range(400)]


def test_stdlib_corpus_is_python_source() -> None:
    texts = stdlib_corpus(max_bytes=200_000)
    assert texts and sum(len(t) for t in texts) >= 200_000 * 0.5
    assert any("def " in t for t in texts)
    assert stdlib_corpus(max_bytes=200_000) == texts  # fixed order


def test_read_corpus_dirs_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("world")
    (tmp_path / "sub" / "c.bin").write_bytes(b"\xff\xfe\x00")
    assert read_corpus([tmp_path]) == ["hello", "world"]
    with pytest.raises(ValueError, match="no such file"):
        read_corpus([tmp_path / "missing"])


def test_vocabulary_round_trip_and_specials() -> None:
    tok = train_vocabulary(TEXT, 300)
    assert tok.get_vocab_size() <= 300
    assert [tok.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>")] == [0, 1, 2]
    sample = "def function_7(x):\n    return x * 7 + 2\n  ünïcödé ✓"
    assert tok.decode(tok.encode(sample).ids) == sample  # byte-level: lossless on any text
    with pytest.raises(ValueError):
        train_vocabulary(TEXT, 100)


@pytest.mark.parametrize("size", [MAX_VOCAB_SIZE + 1, 2**32 - 1])
def test_a_vocabulary_too_large_to_train_is_refused(size: int) -> None:
    """The trainer reserves memory for the size up front: 2**32 - 1 (a fuzzed CreateVocabulary) aborted the
    orchestrator's process on a failed allocation of 283 GB."""
    with pytest.raises(ValueError, match=f"at most {MAX_VOCAB_SIZE}, got {size}"):
        train_vocabulary(TEXT, size)


def test_batches_are_a_pure_function_of_dataset_seed_step() -> None:
    tok = train_vocabulary(TEXT, 300)
    ds = TokenDataset.from_texts(TEXT, tok)
    x1, y1 = ds.batch(seed=3, step=5, batch_size=4, seq_len=16)
    x2, y2 = TokenDataset.from_texts(TEXT, tok).batch(seed=3, step=5, batch_size=4, seq_len=16)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are inputs shifted by one
    x3, _ = ds.batch(seed=3, step=6, batch_size=4, seq_len=16)
    x4, _ = ds.batch(seed=4, step=5, batch_size=4, seq_len=16)
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)
    train, val = ds.split("train"), ds.split("validation")
    assert len(train) + len(val) == len(ds.tokens) and len(val) > 0
    vx, _ = ds.batch(seed=3, step=5, batch_size=2, seq_len=8, split="validation")
    assert all(any(torch.equal(row, val[i:i + 8]) for i in range(len(val) - 7)) for row in vx)
    with pytest.raises(ValueError):
        ds.batch(seed=0, step=0, batch_size=1, seq_len=len(ds.tokens) + 5)


def test_tokens_round_trip_through_safetensors_and_corruption_is_refused() -> None:
    tok = train_vocabulary(TEXT, 300)
    ds = TokenDataset.from_texts(TEXT, tok, validation_fraction=0.1)
    data = ds.to_safetensors()
    assert load_safetensors(data).keys() == {"tokens"}  # an ordinary safetensors file: tokens only
    again = TokenDataset.from_safetensors(data, 0.1, ds.digest, "d")
    assert torch.equal(again.tokens, ds.tokens) and again.validation_fraction == 0.1
    assert again.digest == hashlib.sha256(ds.tokens.numpy().tobytes()).hexdigest() == ds.digest
    assert torch.equal(again.batch(1, 2, 3, 8)[0], ds.batch(1, 2, 3, 8)[0])
    raw = bytearray(data)
    raw[-1] ^= 0xFF  # flip bits of the last token
    with pytest.raises(DataLoss, match=r"^d: tokens hash to [0-9a-f]{12}…, expected [0-9a-f]{12}…$"):
        TokenDataset.from_safetensors(bytes(raw), 0.1, ds.digest, "d")
    with pytest.raises(DataLoss, match=r"^d: not safetensors"):
        TokenDataset.from_safetensors(b"\x08" + bytes(20), 0.1, ds.digest, "d")
    for other in ({"x": torch.zeros(2)}, {"tokens": ds.tokens.int()}, {"tokens": ds.tokens[None]},
                  {"tokens": ds.tokens, "more": ds.tokens.clone()}):
        with pytest.raises(DataLoss, match="expected one flat int64 tensor 'tokens', found"):
            TokenDataset.from_safetensors(save_safetensors(other), 0.1, ds.digest, "d")


def test_a_new_split_keeps_the_tokens_and_the_hash() -> None:
    ds = TokenDataset.from_texts(TEXT, train_vocabulary(TEXT, 300), validation_fraction=0.1)
    wider = ds.with_validation_fraction(0.5)
    assert wider.tokens is ds.tokens and wider.digest == TokenDataset(ds.tokens, 0.5).digest == ds.digest
    assert len(wider.split("validation")) == len(ds.tokens) - int(len(ds.tokens) * 0.5)
    assert ds.validation_fraction == 0.1  # the original is unchanged
