"""The orchestrator's vocabularies and datasets: metadata in the StateStore, contents on disk.

Layout under `root`: `vocabularies/<name>.json` (tokenizer JSON) and
`datasets/<name>.safetensors` (written by `TokenDataset.save`). Every file is written
under a temporary name and renamed into place before its record is stored, so a crash
leaves either the old state or the new one, never a record pointing at half a file.
Datasets are built from a stream of texts without holding the texts in memory.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import uuid
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from dcnr.data.dataset import TokenDataset
from dcnr.orchestrator.store import AlreadyExists, NotFound, StateStore

VOCABULARY = "vocabulary"
DATASET = "dataset"
CHUNK = 256  # texts encoded per `encode_batch` call while building a dataset
MAX_SAMPLE_TOKENS = 4096  # most tokens `explore` decodes

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(kind: str, name: str) -> str:
    """Names of networks, vocabularies and datasets: safe as file names and in URLs."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-' "
                         "(at most 64, starting with a letter or digit)")
    return name


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 0.5:  # also refuses NaN
        raise ValueError(f"validation_fraction must be in (0, 0.5], got {fraction!r}")


def _check_splits(name: str, ds: TokenDataset) -> None:
    if len(ds.split("train")) == 0 or len(ds.split("validation")) == 0:
        raise ValueError(f"dataset {name!r} has {len(ds.tokens)} tokens: too few for both a train and a "
                         f"validation split at validation_fraction {ds.validation_fraction!r}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _dataset_info(name: str, vocabulary: str, ds: TokenDataset, file: str) -> dict[str, Any]:
    return {"name": name, "vocabulary": vocabulary, "tokens": len(ds.tokens),
            "train_tokens": len(ds.split("train")), "validation_tokens": len(ds.split("validation")),
            "sha256": ds.digest, "validation_fraction": ds.validation_fraction, "file": file}


class DataStore:
    """Vocabularies and datasets by name; safe to call from several threads."""

    def __init__(self, store: StateStore, root: str | Path) -> None:
        self.store = store
        self.root = Path(root)
        for sub in ("vocabularies", "datasets"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards the caches, `_building` and every record write
        self._tokenizers: dict[str, Tokenizer] = {}
        self._datasets: dict[str, TokenDataset] = {}
        self._building: dict[str, str] = {}  # dataset being encoded -> its vocabulary

    # -- vocabularies -----------------------------------------------------------------------
    def create_vocabulary(self, name: str, tokenizer_json: str) -> dict[str, Any]:
        """Store a tokenizer (the JSON `tokenizers` writes) under a new name."""
        check_name(VOCABULARY, name)
        try:
            tok = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises a bare Exception
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"vocabulary {name!r}: not a valid tokenizer JSON ({reason})") from None
        file = f"vocabularies/{name}.json"
        info = {"name": name, "vocab_size": tok.get_vocab_size(), "file": file}
        with self._lock:
            if self._exists(VOCABULARY, name):
                raise AlreadyExists(f"vocabulary {name!r} already exists")
            _write_atomic(self.root / file, tokenizer_json)
            self.store.put_blob_record(VOCABULARY, name, info)
            self._tokenizers[name] = tok
        return info

    def get_vocabulary(self, name: str) -> dict[str, Any]:
        return self.store.get_blob_record(VOCABULARY, name)

    def tokenizer(self, name: str) -> Tokenizer:
        """The vocabulary's tokenizer, read from disk once."""
        with self._lock:
            return self._tokenizer(name)

    def list_vocabularies(self) -> list[dict[str, Any]]:
        return self.store.list_blob_records(VOCABULARY)

    def delete_vocabulary(self, name: str) -> bool:
        """Forget a vocabulary and remove its file; refused while a dataset uses it."""
        with self._lock:
            users = sorted({d["name"] for d in self.store.list_blob_records(DATASET) if d["vocabulary"] == name}
                           | {d for d, v in self._building.items() if v == name})
            if users:
                raise ValueError(f"vocabulary {name!r} is used by dataset(s) {', '.join(map(repr, users))}: "
                                 "delete them first")
            try:
                rec = self.store.get_blob_record(VOCABULARY, name)
            except NotFound:
                return False
            self.store.delete_blob_record(VOCABULARY, name)
            self._tokenizers.pop(name, None)
        (self.root / rec["file"]).unlink(missing_ok=True)
        return True

    # -- datasets --------------------------------------------------------------------------------
    def create_dataset(self, name: str, vocabulary: str, texts: Iterable[str],
                       validation_fraction: float = 0.05) -> dict[str, Any]:
        """Encode `texts` (one document each, <eos> after each) into a new dataset, streaming."""
        check_name(DATASET, name)
        _check_fraction(validation_fraction)
        with self._lock:  # everything that can refuse is checked before a single text is read
            if name in self._building or self._exists(DATASET, name):
                raise AlreadyExists(f"dataset {name!r} already exists")
            tok = self._tokenizer(vocabulary)
            self._building[name] = vocabulary
        file = f"datasets/{name}.safetensors"
        staging = self.root / "datasets" / f".{name}.{uuid.uuid4().hex}.safetensors"
        try:
            ds = TokenDataset(self._encode(tok, texts), validation_fraction)
            if len(ds.tokens) == 0:
                raise ValueError(f"dataset {name!r}: the texts gave no tokens")
            _check_splits(name, ds)
            ds.save(staging)
            info = _dataset_info(name, vocabulary, ds, file)
            with self._lock:
                if self._exists(DATASET, name):  # another orchestrator sharing the store got there first
                    raise AlreadyExists(f"dataset {name!r} already exists")
                self.store.get_blob_record(VOCABULARY, vocabulary)  # NotFound if it went away meanwhile
                staging.replace(self.root / file)
                self.store.put_blob_record(DATASET, name, info)
                self._datasets[name] = ds
        finally:
            staging.unlink(missing_ok=True)
            with self._lock:
                self._building.pop(name, None)
        return info

    def dataset(self, name: str) -> TokenDataset:
        """The dataset's tokens, read from disk (and hash-checked) once."""
        with self._lock:
            ds = self._datasets.get(name)
            if ds is None:
                rec = self.store.get_blob_record(DATASET, name)
                ds = self._datasets[name] = TokenDataset.load(self.root / rec["file"])
            return ds

    def get_dataset(self, name: str) -> dict[str, Any]:
        return self.store.get_blob_record(DATASET, name)

    def list_datasets(self) -> list[dict[str, Any]]:
        return self.store.list_blob_records(DATASET)

    def delete_dataset(self, name: str) -> bool:
        """Forget a dataset and remove its file; False if there was none."""
        with self._lock:
            try:
                rec = self.store.get_blob_record(DATASET, name)
            except NotFound:
                return False
            self.store.delete_blob_record(DATASET, name)
            self._datasets.pop(name, None)
        (self.root / rec["file"]).unlink(missing_ok=True)
        return True

    def split_dataset(self, name: str, validation_fraction: float) -> dict[str, Any]:
        """Move the train/validation boundary; the tokens, hence the sha256, stay the same."""
        _check_fraction(validation_fraction)
        ds = self.dataset(name)
        new = TokenDataset(ds.tokens, validation_fraction)
        new.__dict__["digest"] = ds.digest  # same tokens: reuse the cached hash instead of rehashing
        _check_splits(name, new)
        with self._lock:
            rec = self.store.get_blob_record(DATASET, name)  # NotFound if deleted meanwhile
            new.save(self.root / rec["file"])
            info = _dataset_info(name, rec["vocabulary"], new, rec["file"])
            self.store.put_blob_record(DATASET, name, info)
            self._datasets[name] = new
        return info

    def explore(self, name: str, sample_tokens: int = 64) -> tuple[dict[str, Any], str]:
        """The dataset's info and its first `sample_tokens` train tokens decoded (<eos> shown)."""
        if sample_tokens < 0:
            raise ValueError(f"sample_tokens must be >= 0, got {sample_tokens}")
        info = self.get_dataset(name)
        ids = self.dataset(name).split("train")[:min(sample_tokens, MAX_SAMPLE_TOKENS)].tolist()
        return info, self.tokenizer(info["vocabulary"]).decode(ids, skip_special_tokens=False)

    # -- internals ---------------------------------------------------------------------------------
    def _exists(self, kind: str, name: str) -> bool:
        try:
            self.store.get_blob_record(kind, name)
        except NotFound:
            return False
        return True

    def _tokenizer(self, name: str) -> Tokenizer:
        """`tokenizer` without taking the lock (the caller holds it)."""
        tok = self._tokenizers.get(name)
        if tok is None:
            rec = self.store.get_blob_record(VOCABULARY, name)
            tok = self._tokenizers[name] = Tokenizer.from_file(str(self.root / rec["file"]))
        return tok

    @staticmethod
    def _encode(tok: Tokenizer, texts: Iterable[str]) -> torch.Tensor:
        """(N,) int64: each text's ids then <eos> (if the vocabulary has one), CHUNK texts at a time."""
        eos = tok.token_to_id("<eos>")
        ids = array("q")  # 8 bytes per token, grown in place
        it = iter(texts)
        while chunk := list(itertools.islice(it, CHUNK)):
            for enc in tok.encode_batch(chunk, add_special_tokens=False):
                ids.extend(enc.ids)
                if eos is not None:
                    ids.append(eos)
            del chunk  # let the texts go before reading the next chunk
        return torch.frombuffer(ids, dtype=torch.long).clone() if ids else torch.zeros(0, dtype=torch.long)
