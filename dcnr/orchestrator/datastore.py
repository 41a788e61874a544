"""The orchestrator's vocabularies and datasets, kept in the object store beside checkpoints.

The object store (`file://` or `s3://`, the one checkpoints use) is the only record of
them: a restarted orchestrator, or a second one with its own state directory pointed at
the same storage URL, sees every vocabulary and dataset. SQLite holds nothing about them.
A process caches parsed tokenizers and loaded tokens by the key of the content they came
from and reads the small record on every call, so a change made by another orchestrator
is seen on the next call.

Keys, for a vocabulary or a dataset called <name>:

    data/vocabularies/<name>/<sha256>.json         the tokenizer JSON that `tokenizers` writes
    data/vocabularies/<name>/vocabulary.json       its record: name, vocab_size, object (the key above)
    data/datasets/<name>/<sha256>.safetensors      the tokens: one flat int64 tensor
    data/datasets/<name>/dataset.json              its record: name, vocabulary, tokens, train_tokens,
                                                   validation_tokens, validation_fraction,
                                                   sha256 (of the tokens), object (the key above)

Contents are named by the sha256 of their bytes and checked on every read (a mismatch
is an `IntegrityError`, a `DataLoss`). A record is written after its contents, so whoever
finds a record finds whole contents behind it; a crash before the record leaves contents
that no record names, removed when the name is deleted. Deleting removes the record
first (the name is gone at once), then everything under the name. A new split rewrites
only the record.

Within a process, every check-then-write holds one lock. Across orchestrators sharing a
store nothing is locked: of two creating the same name at the same moment the record
written last wins, and a vocabulary deleted by one while another encodes a dataset with
it is noticed only by the check made just before the dataset's record is written.
Datasets are built from a stream of texts without holding the texts in memory; the
orchestrator's `Limits` bound a vocabulary's JSON and size, and a dataset's documents and text.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from tokenizers import Tokenizer

from dcnr.data.dataset import TokenDataset
from dcnr.errors import Aborted, DataLoss, InvalidArgument
from dcnr.orchestrator.limits import Limits
from dcnr.orchestrator.store import AlreadyExists, NotFound
from dcnr.storage import ObjectStore, get_checked, put_checked

log = logging.getLogger("dcnr.orchestrator.datastore")
T = TypeVar("T")

VOCABULARY = "vocabulary"
DATASET = "dataset"
PREFIX = {VOCABULARY: "data/vocabularies", DATASET: "data/datasets"}
FIELDS = {VOCABULARY: {"name", "vocab_size", "object"},
          DATASET: {"name", "vocabulary", "tokens", "train_tokens", "validation_tokens", "validation_fraction",
                    "sha256", "object"}}
CHUNK = 256  # texts encoded per `encode_batch` call while building a dataset ...
CHUNK_BYTES = 4 * 2**20  # ... or fewer, once they hold this many bytes (`tokenizers` holds ~30 times as much)
MAX_SAMPLE_TOKENS = 4096  # most tokens `explore` decodes

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(kind: str, name: str) -> str:
    """Names of networks, vocabularies and datasets: safe as file names, object keys and in URLs."""
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


def _dataset_info(name: str, vocabulary: str, ds: TokenDataset, key: str) -> dict[str, Any]:
    return {"name": name, "vocabulary": vocabulary, "tokens": len(ds.tokens),
            "train_tokens": len(ds.split("train")), "validation_tokens": len(ds.split("validation")),
            "validation_fraction": ds.validation_fraction, "sha256": ds.digest, "object": key}


def _record_key(kind: str, name: str) -> str:
    return f"{PREFIX[kind]}/{name}/{kind}.json"


class DataStore:
    """Vocabularies and datasets by name in an object store; safe to call from several threads."""

    def __init__(self, objects: ObjectStore, limits: Limits | None = None) -> None:
        self.objects = objects
        self.limits = limits or Limits()
        self._lock = threading.Lock()  # guards the caches, `_building` and every check-then-write
        self._tokenizers: dict[str, tuple[str, Tokenizer]] = {}  # name -> (key it was read from, tokenizer)
        self._datasets: dict[str, tuple[str, TokenDataset]] = {}  # name -> (key it was read from, dataset)
        self._building: dict[str, str] = {}  # dataset being encoded -> its vocabulary

    # -- vocabularies -----------------------------------------------------------------------
    def create_vocabulary(self, name: str, tokenizer_json: str) -> dict[str, Any]:
        """Store a tokenizer (the JSON `tokenizers` writes) under a new name. Refused unless the JSON is
        within `max_vocabulary_bytes` and parses, the tokenizer has 1 to `max_vocab_size` tokens, and it
        does not pad (networks pad in their tokenizer nodes)."""
        check_name(VOCABULARY, name)
        data = tokenizer_json.encode()
        self.limits.check("max_vocabulary_bytes", len(data), f"vocabulary {name!r}: the tokenizer JSON")
        try:
            tok = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises a bare Exception
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InvalidArgument(f"vocabulary {name!r}: not a valid tokenizer JSON ({reason})") from None
        size = tok.get_vocab_size()
        if size == 0:
            raise InvalidArgument(f"vocabulary {name!r}: the tokenizer has no tokens")
        self.limits.check("max_vocab_size", size, f"vocabulary {name!r}: the number of tokens ({size})")
        if tok.padding is not None:  # padded to a fixed length, every document could take any memory
            raise InvalidArgument(f"vocabulary {name!r}: the tokenizer pads its encodings; store one without "
                                  "padding (a tokenizer node pads to its pad_length)")
        with self._lock:
            if self.objects.exists(_record_key(VOCABULARY, name)):
                raise AlreadyExists(f"vocabulary {name!r} already exists")
            key = put_checked(self.objects, f"{PREFIX[VOCABULARY]}/{name}", data, ".json")
            info = {"name": name, "vocab_size": size, "object": key}
            self._put_record(VOCABULARY, name, info)
            self._tokenizers[name] = (key, tok)
        return info

    def get_vocabulary(self, name: str) -> dict[str, Any]:
        return self._record(VOCABULARY, name)

    def tokenizer(self, name: str) -> Tokenizer:
        """The vocabulary's tokenizer; its JSON is read from the store (and hash-checked) once."""
        def load(rec: dict[str, Any]) -> Tokenizer:
            data = get_checked(self.objects, rec["object"])
            try:
                return Tokenizer.from_str(data.decode())
            except Exception:  # not UTF-8, or tokenizers' bare Exception
                raise DataLoss(f"vocabulary {name!r}: {rec['object']} is not a tokenizer JSON: refused") from None

        return self._cached(VOCABULARY, name, self._tokenizers, load)[1]

    def list_vocabularies(self) -> list[dict[str, Any]]:
        return self._records(VOCABULARY)

    def delete_vocabulary(self, name: str) -> bool:
        """Forget a vocabulary and remove its objects; refused while a dataset uses it."""
        check_name(VOCABULARY, name)
        with self._lock:
            users = sorted({d["name"] for d in self._records(DATASET) if d["vocabulary"] == name}
                           | {d for d, v in self._building.items() if v == name})
            if users:
                raise ValueError(f"vocabulary {name!r} is used by dataset(s) {', '.join(map(repr, users))}: "
                                 "delete them first")
            self._tokenizers.pop(name, None)
            return self._delete(VOCABULARY, name)

    # -- datasets --------------------------------------------------------------------------------
    def create_dataset(self, name: str, vocabulary: str, texts: Iterable[str],
                       validation_fraction: float = 0.05) -> dict[str, Any]:
        """Encode `texts` (one document each, <eos> after each) into a new dataset, streaming."""
        check_name(DATASET, name)
        _check_fraction(validation_fraction)
        # everything that can refuse is checked before a single text is read
        tok = self.tokenizer(vocabulary)
        with self._lock:
            if name in self._building or self.objects.exists(_record_key(DATASET, name)):
                raise AlreadyExists(f"dataset {name!r} already exists")
            self._building[name] = vocabulary
        try:
            ds = TokenDataset(self._encode(tok, self._bounded(name, texts)), validation_fraction)
            if len(ds.tokens) == 0:
                raise ValueError(f"dataset {name!r}: the texts gave no tokens")
            _check_splits(name, ds)
            key = put_checked(self.objects, f"{PREFIX[DATASET]}/{name}", ds.to_safetensors(), ".safetensors")
            info = _dataset_info(name, vocabulary, ds, key)
            with self._lock:
                if self.objects.exists(_record_key(DATASET, name)):  # another orchestrator got there first
                    raise AlreadyExists(f"dataset {name!r} already exists")
                self._record(VOCABULARY, vocabulary)  # NotFound if another orchestrator deleted it meanwhile
                self._put_record(DATASET, name, info)
                self._datasets[name] = (key, ds)
        finally:
            with self._lock:
                self._building.pop(name, None)
        return info

    def dataset(self, name: str) -> TokenDataset:
        """The dataset's tokens, split as its record says; read from the store (and hash-checked) once."""
        def load(rec: dict[str, Any]) -> TokenDataset:
            return TokenDataset.from_safetensors(get_checked(self.objects, rec["object"]), rec["validation_fraction"],
                                                 rec["sha256"], f"dataset {name!r} ({rec['object']})")

        rec, ds = self._cached(DATASET, name, self._datasets, load)
        if ds.validation_fraction != rec["validation_fraction"]:  # split anew, elsewhere
            ds = ds.with_validation_fraction(rec["validation_fraction"])
            with self._lock:
                self._datasets[name] = (rec["object"], ds)
        return ds

    def get_dataset(self, name: str) -> dict[str, Any]:
        return self._record(DATASET, name)

    def list_datasets(self) -> list[dict[str, Any]]:
        return self._records(DATASET)

    def delete_dataset(self, name: str) -> bool:
        """Forget a dataset and remove its objects; False if there was none."""
        check_name(DATASET, name)
        with self._lock:
            self._datasets.pop(name, None)
            return self._delete(DATASET, name)

    def split_dataset(self, name: str, validation_fraction: float) -> dict[str, Any]:
        """Move the train/validation boundary: only the record changes; the tokens, hence the sha256, stay."""
        _check_fraction(validation_fraction)
        new = self.dataset(name).with_validation_fraction(validation_fraction)
        _check_splits(name, new)
        with self._lock:
            rec = self._record(DATASET, name)  # NotFound if deleted meanwhile
            if rec["sha256"] != new.digest:
                raise Aborted(f"dataset {name!r} was replaced while being split: try again")
            info = _dataset_info(name, rec["vocabulary"], new, rec["object"])
            self._put_record(DATASET, name, info)
            self._datasets[name] = (rec["object"], new)
        return info

    def explore(self, name: str, sample_tokens: int = 64) -> tuple[dict[str, Any], str]:
        """The dataset's info and its first `sample_tokens` train tokens decoded (<eos> shown)."""
        if sample_tokens < 0:
            raise ValueError(f"sample_tokens must be >= 0, got {sample_tokens}")
        info = self.get_dataset(name)
        ids = self.dataset(name).split("train")[:min(sample_tokens, MAX_SAMPLE_TOKENS)].tolist()
        return info, self.tokenizer(info["vocabulary"]).decode(ids, skip_special_tokens=False)

    # -- records -------------------------------------------------------------------------------------
    def _record(self, kind: str, name: str) -> dict[str, Any]:
        """The record of `name`: NotFound if there is none, DataLoss if it is not a record of its kind."""
        key = _record_key(kind, check_name(kind, name))
        try:
            raw = self.objects.get(key)
        except FileNotFoundError:
            raise NotFound(f"unknown {kind} {name!r}") from None
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            rec = None
        if not isinstance(rec, dict) or rec.get("name") != name or not FIELDS[kind] <= rec.keys():
            raise DataLoss(f"{key} in {self.objects.url} is not a {kind} record: refused")
        return rec

    def _cached(self, kind: str, name: str, cache: dict[str, tuple[str, T]],
                load: Callable[[dict[str, Any]], T]) -> tuple[dict[str, Any], T]:
        """The name's record and `load(record)`, or what `load` gave before for the same content."""
        try:
            rec = self._record(kind, name)
        except NotFound:
            with self._lock:
                cache.pop(name, None)
            raise
        with self._lock:
            cached = cache.get(name)
        if cached is not None and cached[0] == rec["object"]:
            return rec, cached[1]
        value = load(rec)  # outside the lock: a large download must not stall other calls
        with self._lock:
            cache[name] = (rec["object"], value)
        return rec, value

    def _put_record(self, kind: str, name: str, info: dict[str, Any]) -> None:
        self.objects.put(_record_key(kind, name), json.dumps(info, sort_keys=True).encode())

    def _records(self, kind: str) -> list[dict[str, Any]]:
        """Every readable record of a kind, by name; a damaged one is logged and skipped."""
        prefix = PREFIX[kind] + "/"
        found = []
        for key in self.objects.list(prefix):
            name, _, rest = key[len(prefix):].partition("/")
            if rest != f"{kind}.json":
                continue
            try:
                found.append(self._record(kind, name))
            except NotFound:  # deleted since the listing
                continue
            except ValueError as e:  # DataLoss, or a name we would never have written
                log.warning("skipping %s: %s", key, e)
        return sorted(found, key=lambda r: str(r["name"]))

    def _delete(self, kind: str, name: str) -> bool:
        """Remove the record, then every object under the name; False if there was no record."""
        record = _record_key(kind, name)
        if not self.objects.exists(record):
            return False
        self.objects.delete(record)
        for key in self.objects.list(f"{PREFIX[kind]}/{name}/"):
            self.objects.delete(key)
        return True

    def _bounded(self, name: str, texts: Iterable[str]) -> Iterator[tuple[str, int]]:
        """Each text with its size in UTF-8 bytes, refused (`ResourceExhausted`) as soon as it, or the texts so
        far, pass a limit; nothing after the text that passed one is read."""
        total, what = 0, f"dataset {name!r}"
        for count, text in enumerate(texts, 1):
            size = len(text.encode())
            self.limits.check("max_dataset_documents", count, f"{what}: the number of documents")
            self.limits.check("max_document_bytes", size, f"{what}: document {count}")
            total = self.limits.check("max_dataset_bytes", total + size, f"{what}: the text")
            yield text, size

    @staticmethod
    def _encode(tok: Tokenizer, texts: Iterable[tuple[str, int]]) -> torch.Tensor:
        """(N,) int64: each text's ids then <eos> (if the vocabulary has one), encoded CHUNK texts or
        CHUNK_BYTES bytes at a time; `texts` are (text, its size in bytes)."""
        eos = tok.token_to_id("<eos>")
        ids = array("q")  # 8 bytes per token, grown in place
        chunk: list[str] = []
        size = 0

        def encode() -> None:
            for enc in tok.encode_batch(chunk, add_special_tokens=False):
                ids.extend(enc.ids)
                if eos is not None:
                    ids.append(eos)
            chunk.clear()  # let the texts go before reading the next chunk

        for text, n in texts:
            chunk.append(text)
            size += n
            if len(chunk) == CHUNK or size >= CHUNK_BYTES:
                encode()
                size = 0
        encode()
        return torch.frombuffer(ids, dtype=torch.long).clone() if ids else torch.zeros(0, dtype=torch.long)
