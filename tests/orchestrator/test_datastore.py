"""The data store: vocabularies and datasets by name, streamed in, kept in the object store so that
a restarted orchestrator, or another one on the same storage, sees them."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from dcnr.data import TokenDataset, train_vocabulary
from dcnr.errors import DataLoss
from dcnr.orchestrator import datastore as datastore_module
from dcnr.orchestrator.app import Orchestrator
from dcnr.orchestrator.datastore import DataStore
from dcnr.orchestrator.store import AlreadyExists, NotFound
from dcnr.storage import FileStore, IntegrityError, open_store

TEXTS = [f"def f_{i}(x):\n    return x * {i}\n" for i in range(40)]


@functools.cache
def _vocab() -> Tokenizer:
    return train_vocabulary(TEXTS, 300)


def _json() -> str:
    return _vocab().to_str()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def ds(tmp_path: Path) -> DataStore:
    d = DataStore(FileStore(tmp_path / "storage"))
    d.create_vocabulary("code", _json())
    return d


def _expected_tokens(texts: list[str]) -> int:
    return sum(len(_vocab().encode(t, add_special_tokens=False).ids) + 1 for t in texts)


# -- vocabularies -------------------------------------------------------------------------------------
def test_vocabulary_create_get_list_delete(tmp_path: Path) -> None:
    objects = FileStore(tmp_path / "missing" / "root")
    d = DataStore(objects)
    info = d.create_vocabulary("code", _json())
    key = f"data/vocabularies/code/{_sha(_json().encode())}.json"
    assert info == {"name": "code", "vocab_size": _vocab().get_vocab_size(), "object": key}
    assert objects.get(key) == _json().encode()
    assert json.loads(objects.get("data/vocabularies/code/vocabulary.json")) == info  # the record
    assert d.get_vocabulary("code") == info
    d.create_vocabulary("code-2.v1", _json())
    assert [v["name"] for v in d.list_vocabularies()] == ["code", "code-2.v1"]
    assert d.tokenizer("code") is d.tokenizer("code")  # cached
    assert d.tokenizer("code").encode("return x").ids == _vocab().encode("return x").ids
    assert d.delete_vocabulary("code") is True
    assert d.delete_vocabulary("code") is False
    assert objects.list("data/vocabularies/code/") == []
    assert [v["name"] for v in d.list_vocabularies()] == ["code-2.v1"]
    with pytest.raises(NotFound, match="unknown vocabulary 'code'"):
        d.get_vocabulary("code")
    with pytest.raises(NotFound, match="unknown vocabulary 'code'"):
        d.tokenizer("code")


def test_bad_tokenizer_json_is_a_one_line_value_error(ds: DataStore) -> None:
    for bad in ("{not json", "{}", ""):
        with pytest.raises(ValueError, match="not a valid tokenizer JSON") as e:
            ds.create_vocabulary("bad", bad)
        assert "\n" not in str(e.value)
    assert [v["name"] for v in ds.list_vocabularies()] == ["code"]


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-x", "_x", "a b", "x" * 65, "é", "a\n"])
def test_bad_names_are_refused(ds: DataStore, name: str) -> None:
    with pytest.raises(ValueError, match=r"invalid vocabulary name .*use letters, digits"):
        ds.create_vocabulary(name, _json())
    with pytest.raises(ValueError, match=r"invalid dataset name .*use letters, digits"):
        ds.create_dataset(name, "code", TEXTS)


def test_longest_name_is_accepted(ds: DataStore) -> None:
    assert ds.create_vocabulary("x" * 64, _json())["name"] == "x" * 64


def test_duplicates_are_refused(ds: DataStore) -> None:
    with pytest.raises(AlreadyExists, match="vocabulary 'code' already exists"):
        ds.create_vocabulary("code", _json())
    ds.create_dataset("d", "code", TEXTS)
    with pytest.raises(AlreadyExists, match="dataset 'd' already exists"):
        ds.create_dataset("d", "code", TEXTS)


# -- datasets -----------------------------------------------------------------------------------------
class _Doc(str):
    """A text that counts how many of its kind are alive, to see whether a caller holds on to them."""

    alive = 0

    def __new__(cls, value: str) -> _Doc:
        cls.alive += 1
        return super().__new__(cls, value)

    def __del__(self) -> None:
        type(self).alive -= 1


def test_create_dataset_streams_its_texts(ds: DataStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datastore_module, "CHUNK", 8)
    pulled, most_alive = 0, 0

    def docs() -> Iterator[str]:
        nonlocal pulled, most_alive
        for i in range(200):
            most_alive = max(most_alive, _Doc.alive)
            pulled += 1
            yield _Doc(TEXTS[i % len(TEXTS)])

    info = ds.create_dataset("d", "code", docs())
    assert pulled == 200
    assert most_alive <= 8 + 1  # one chunk at a time, never the whole corpus
    texts = [TEXTS[i % len(TEXTS)] for i in range(200)]
    assert info["tokens"] == _expected_tokens(texts)
    assert info["train_tokens"] + info["validation_tokens"] == info["tokens"]


def test_refusals_come_before_reading_any_text(ds: DataStore) -> None:
    ds.create_dataset("d", "code", TEXTS)
    pulled = 0

    def docs() -> Iterator[str]:
        nonlocal pulled
        for t in TEXTS:
            pulled += 1
            yield t

    with pytest.raises(AlreadyExists):
        ds.create_dataset("d", "code", docs())
    with pytest.raises(NotFound, match="unknown vocabulary 'nope'"):
        ds.create_dataset("e", "nope", docs())
    with pytest.raises(ValueError, match="validation_fraction"):
        ds.create_dataset("e", "code", docs(), validation_fraction=0.7)
    assert pulled == 0


def test_tokens_match_from_texts(ds: DataStore) -> None:
    info = ds.create_dataset("d", "code", iter(TEXTS), validation_fraction=0.1)
    ref = TokenDataset.from_texts(TEXTS, _vocab(), validation_fraction=0.1)
    got = ds.dataset("d")
    assert torch.equal(got.tokens, ref.tokens) and got.tokens.dtype == torch.long
    assert info["sha256"] == ref.digest
    key = f"data/datasets/d/{_sha(ref.to_safetensors())}.safetensors"
    assert info == {"name": "d", "vocabulary": "code", "tokens": len(ref.tokens),
                    "train_tokens": len(ref.split("train")), "validation_tokens": len(ref.split("validation")),
                    "sha256": ref.digest, "validation_fraction": 0.1, "object": key}
    assert ds.get_dataset("d") == info
    assert ds.dataset("d") is got  # cached


def test_empty_or_too_small_datasets_are_refused(ds: DataStore) -> None:
    with pytest.raises(ValueError, match="no tokens"):
        ds.create_dataset("d", "code", [])
    with pytest.raises(ValueError, match="too few"):
        ds.create_dataset("d", "code", [""])  # a lone <eos>: no room for two splits
    assert ds.list_datasets() == []
    assert ds.objects.list("data/datasets/") == []  # nothing left behind


def test_a_failing_stream_leaves_nothing_behind(ds: DataStore) -> None:
    def docs() -> Iterator[str]:
        yield from TEXTS
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        ds.create_dataset("d", "code", docs())
    assert ds.list_datasets() == [] and ds.objects.list("data/datasets/") == []
    ds.create_dataset("d", "code", TEXTS)  # the name is free again


# -- one storage, many orchestrators -------------------------------------------------------------------
@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """(storage URL, S3 endpoint or None): a directory, or a fresh bucket on the loopback S3 server."""
    if request.param == "file":
        return (tmp_path / "shared").as_uri(), None
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/dcnr", endpoint


def test_a_second_data_store_on_the_same_storage_sees_and_uses_everything(storage: tuple[str, str | None]) -> None:
    url, endpoint = storage
    first = DataStore(open_store(url, endpoint))
    first.create_vocabulary("code", _json())
    info = first.create_dataset("d", "code", TEXTS)
    split = first.split_dataset("d", 0.25)
    second = DataStore(open_store(url, endpoint))  # shares nothing with `first` but the URL
    assert second.list_vocabularies() == [first.get_vocabulary("code")]
    assert second.list_datasets() == [split] and second.get_dataset("d") == split
    ref = TokenDataset.from_texts(TEXTS, _vocab(), validation_fraction=0.25)
    got = second.dataset("d")
    assert torch.equal(got.tokens, ref.tokens) and got.digest == info["sha256"] == ref.digest
    for part in ("train", "validation"):
        batches = [d.batch(7, 3, 4, 8, part) for d in (got, first.dataset("d"), ref)]
        assert all(torch.equal(x, batches[0][0]) and torch.equal(y, batches[0][1]) for x, y in batches)
    assert second.tokenizer("code").encode("return x").ids == _vocab().encode("return x").ids
    second.split_dataset("d", 0.5)  # what one does, the other sees on its next call
    assert first.dataset("d").validation_fraction == 0.5 and first.get_dataset("d")["validation_fraction"] == 0.5
    assert second.delete_dataset("d")
    second.create_dataset("d", "code", TEXTS[:20])  # the same name, other tokens: `first` must not serve its cache
    assert torch.equal(first.dataset("d").tokens, TokenDataset.from_texts(TEXTS[:20], _vocab()).tokens)
    assert second.delete_dataset("d") and second.delete_vocabulary("code")
    with pytest.raises(NotFound, match="unknown dataset 'd'"):
        first.dataset("d")
    with pytest.raises(NotFound, match="unknown vocabulary 'code'"):
        first.tokenizer("code")
    assert first.list_vocabularies() == [] and open_store(url, endpoint).list("") == []  # every object removed


def test_a_corrupted_dataset_object_is_refused(storage: tuple[str, str | None]) -> None:
    url, endpoint = storage
    objects = open_store(url, endpoint)
    first = DataStore(objects)
    first.create_vocabulary("code", _json())
    info = first.create_dataset("d", "code", TEXTS)
    raw = bytearray(objects.get(info["object"]))
    raw[-1] ^= 0x01  # one flipped bit in the last token
    objects.put(info["object"], bytes(raw))
    with pytest.raises(IntegrityError, match=r"object data/datasets/d/[0-9a-f]{64}\.safetensors in .* does not "
                                             r"match its hash: refused") as e:
        DataStore(open_store(url, endpoint)).dataset("d")
    assert isinstance(e.value, DataLoss)
    # whole, well-named tokens that are not the ones the record describes are refused too
    forged = TokenDataset(torch.arange(50), 0.05).to_safetensors()
    key = f"data/datasets/d/{_sha(forged)}.safetensors"
    objects.put(key, forged)
    objects.put("data/datasets/d/dataset.json", json.dumps({**info, "object": key}).encode())
    with pytest.raises(DataLoss, match=r"dataset 'd' .*: tokens hash to [0-9a-f]{12}…, expected [0-9a-f]{12}…$"):
        DataStore(open_store(url, endpoint)).dataset("d")


def test_a_damaged_record_is_refused_by_name_skipped_in_lists_and_deletable(ds: DataStore,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    ds.create_dataset("d", "code", TEXTS)
    ds.create_dataset("e", "code", TEXTS)
    ds.objects.put("data/datasets/d/dataset.json", b"{not json")
    with pytest.raises(DataLoss, match=r"^data/datasets/d/dataset\.json in file://.* is not a dataset record: "
                                        r"refused$"):
        ds.get_dataset("d")
    with caplog.at_level(logging.WARNING, logger="dcnr.orchestrator.datastore"):
        assert [x["name"] for x in ds.list_datasets()] == ["e"]
    assert "skipping data/datasets/d/dataset.json" in caplog.text
    assert ds.delete_dataset("d") is True and ds.objects.list("data/datasets/d/") == []
    ds.objects.put("data/datasets/e/dataset.json", json.dumps({**ds.get_dataset("e"), "name": "x"}).encode())
    with pytest.raises(DataLoss, match="is not a dataset record"):  # a record must name what it describes
        ds.get_dataset("e")


def test_a_corrupted_vocabulary_is_refused(ds: DataStore) -> None:
    info = ds.get_vocabulary("code")
    ds.objects.put(info["object"], b'{"version": "1.0"}')
    with pytest.raises(IntegrityError, match="does not match its hash"):
        DataStore(ds.objects).tokenizer("code")
    key = f"data/vocabularies/code/{_sha(b'not a tokenizer')}.json"
    ds.objects.put(key, b"not a tokenizer")
    ds.objects.put("data/vocabularies/code/vocabulary.json", json.dumps({**info, "object": key}).encode())
    with pytest.raises(DataLoss, match=f"vocabulary 'code': {key} is not a tokenizer JSON: refused"):
        DataStore(ds.objects).tokenizer("code")


def test_orchestrators_see_the_data_of_their_storage_not_of_their_state_dir(tmp_path: Path) -> None:
    a = Orchestrator(tmp_path / "a")  # default storage: inside its state dir
    a.data.create_vocabulary("code", _json())
    a.data.create_dataset("d", "code", TEXTS)
    a.store.close()
    again = Orchestrator(tmp_path / "a")  # a restart
    shared = Orchestrator(tmp_path / "b", storage=(tmp_path / "a" / "storage").as_uri())  # another state dir
    fresh = Orchestrator(tmp_path / "c")
    try:
        for o in (again, shared):
            assert [x["name"] for x in o.data.list_datasets()] == ["d"]
            assert torch.equal(o.data.dataset("d").batch(1, 2, 3, 8)[0], a.data.dataset("d").batch(1, 2, 3, 8)[0])
        assert fresh.data.list_datasets() == [] and fresh.data.list_vocabularies() == []
    finally:
        for o in (again, shared, fresh):
            o.store.close()


def test_split_moves_the_boundary_and_keeps_the_hash(ds: DataStore) -> None:
    before = ds.create_dataset("d", "code", TEXTS)
    after = ds.split_dataset("d", 0.5)
    assert after["validation_fraction"] == 0.5 and after["sha256"] == before["sha256"]
    assert after["tokens"] == before["tokens"]
    assert after["validation_tokens"] > before["validation_tokens"]
    assert after["train_tokens"] + after["validation_tokens"] == after["tokens"]
    assert ds.get_dataset("d") == after
    assert ds.dataset("d").validation_fraction == 0.5
    assert len(ds.dataset("d").split("validation")) == after["validation_tokens"]
    assert after["object"] == before["object"]  # only the record was rewritten
    assert json.loads(ds.objects.get("data/datasets/d/dataset.json")) == after
    assert ds.objects.list("data/datasets/") == sorted([after["object"], "data/datasets/d/dataset.json"])


@pytest.mark.parametrize("fraction", [0.0, -0.1, 0.51, 1.0, float("nan")])
def test_split_with_a_bad_fraction_is_refused(ds: DataStore, fraction: float) -> None:
    ds.create_dataset("d", "code", TEXTS)
    with pytest.raises(ValueError, match=rf"validation_fraction must be in \(0, 0.5\], got {fraction!r}"):
        ds.split_dataset("d", fraction)
    assert ds.get_dataset("d")["validation_fraction"] == 0.05


def test_split_that_would_empty_a_side_is_refused(ds: DataStore) -> None:
    ds.create_dataset("d", "code", ["x"])  # two tokens: x, <eos>
    with pytest.raises(ValueError, match="too few"):
        ds.split_dataset("d", 1e-20)


def test_explore_decodes_the_start_of_the_train_split(ds: DataStore) -> None:
    info = ds.create_dataset("d", "code", TEXTS)
    got, text = ds.explore("d", sample_tokens=50)
    assert got == info
    joined = "".join(t + "<eos>" for t in TEXTS)
    assert text and joined.startswith(text)
    assert len(_vocab().encode(text).ids) <= 50 + 5  # roughly the tokens asked for
    _, everything = ds.explore("d", sample_tokens=10**9)  # capped, not an error
    assert joined.startswith(everything)
    assert ds.explore("d", sample_tokens=0)[1] == ""
    with pytest.raises(ValueError, match="sample_tokens"):
        ds.explore("d", sample_tokens=-1)


def test_a_vocabulary_in_use_cannot_be_deleted(ds: DataStore) -> None:
    ds.create_dataset("b", "code", TEXTS)
    ds.create_dataset("a", "code", TEXTS)
    with pytest.raises(ValueError, match="vocabulary 'code' is used by dataset\\(s\\) 'a', 'b'"):
        ds.delete_vocabulary("code")
    assert ds.delete_dataset("a") and ds.delete_dataset("b")
    assert ds.delete_vocabulary("code")


def test_delete_dataset(ds: DataStore) -> None:
    info = ds.create_dataset("d", "code", TEXTS)
    ds.dataset("d")
    assert ds.delete_dataset("d") is True
    assert ds.objects.list("data/datasets/") == [] and not ds.objects.exists(info["object"])
    assert ds.delete_dataset("d") is False
    with pytest.raises(NotFound, match="unknown dataset 'd'"):
        ds.dataset("d")  # the cache forgot it too


def test_unknown_names_are_not_found(ds: DataStore) -> None:
    for call in (ds.get_dataset, ds.dataset, ds.explore, lambda n: ds.split_dataset(n, 0.1)):
        with pytest.raises(NotFound, match="unknown dataset 'nope'"):
            call("nope")
    with pytest.raises(NotFound, match="unknown vocabulary 'nope'"):
        ds.get_vocabulary("nope")
    assert ds.delete_dataset("nope") is False and ds.delete_vocabulary("nope") is False


_names = itertools.count()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> DataStore:
    root = tmp_path_factory.mktemp("datastore")
    d = DataStore(FileStore(root / "storage"))
    d.create_vocabulary("code", _json())
    return d


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6))
def test_token_count_is_the_sum_of_the_encodings(shared: DataStore, texts: list[str]) -> None:
    name = f"d{next(_names)}"
    info = shared.create_dataset(name, "code", iter(texts), validation_fraction=0.5)
    assert info["tokens"] == _expected_tokens(texts)
    assert len(shared.dataset(name).tokens) == info["tokens"]
    shared.delete_dataset(name)
