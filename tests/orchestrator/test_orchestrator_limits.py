"""The orchestrator's limits on what one request may ask, with its parts in process (no server, no PNode):
each cap refuses with a one-line error naming what was too large and the limit, before the memory it
guards is spent (streams are cut while they are read), and leaves the orchestrator's state as it was."""

from __future__ import annotations

import contextlib
import functools
import itertools
import tracemalloc
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from dcnr.data import train_vocabulary
from dcnr.errors import InvalidArgument, ResourceExhausted
from dcnr.orchestrator import datasets
from dcnr.orchestrator import datastore as datastore_module
from dcnr.orchestrator.app import Orchestrator
from dcnr.orchestrator.limits import Limits
from dcnr.proto.v2 import orchestrator_pb2 as pb
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.grpc.orchestrator_service import OrchestratorServicer, _documents

TEXTS = [f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13} times." for i in range(60)]
SMALL = Limits(max_artifact_bytes=4096, max_network_yaml_bytes=64 * 1024, max_document_bytes=256,
               max_dataset_bytes=8192, max_dataset_documents=100, max_vocabulary_bytes=1 << 20, max_vocab_size=400,
               max_training_text_bytes=8192, max_batch_size=8, max_validation_batches=4, max_chat_tokens=5)
HUGE = 2**32 - 1  # the largest uint32 a request can carry


@functools.cache
def vocabulary() -> Tokenizer:
    return train_vocabulary(TEXTS, 300)


def small_lm(vocab_size: int = 300) -> str:
    doc = transformer_lm("small", blocks=1, heads=2, head_dim=8, dim=16, seq_len=8, vocab_size=vocab_size,
                         dropout=0.0)
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture()
def orch(tmp_path: Path) -> Iterator[Orchestrator]:
    o = Orchestrator(tmp_path / "state", limits=SMALL)  # wired, never started: no server
    yield o
    o.stop()


@pytest.fixture()
def trained(orch: Orchestrator) -> Orchestrator:
    """`orch` with the network 'small', the vocabulary 'v' and the dataset 'd' (vocabulary and dataset as
    large as the limits allow)."""
    orch.networks.create(small_lm())
    datasets.create_vocabulary(orch.data, "v", tokenizer_json=vocabulary().to_str())
    orch.data.create_dataset("d", "v", TEXTS, validation_fraction=0.1)
    return orch


@contextlib.contextmanager
def refused(error: type[Exception], *texts: str) -> Iterator[None]:
    """`pytest.raises(error)` whose message is one line holding every one of `texts`."""
    with pytest.raises(error) as info:
        yield
    message = str(info.value)
    assert "\n" not in message, message
    for text in texts:
        assert text in message, f"{text!r} not in {message!r}"


def counted(items: Iterator[Any]) -> tuple[Iterator[Any], list[int]]:
    """`items`, and a one-element list that counts how many were pulled."""
    pulled = [0]

    def gen() -> Iterator[Any]:
        for item in items:
            pulled[0] += 1
            yield item
    return gen(), pulled


def objects(o: Orchestrator) -> list[str]:
    return sorted(o.data.objects.list("data/"))


# -- the limits themselves ------------------------------------------------------------------------------------

def test_every_default_is_a_positive_integer_and_a_bad_limit_is_refused() -> None:
    for f in fields(Limits):
        assert type(getattr(Limits(), f.name)) is int and getattr(Limits(), f.name) > 0, f.name
    for bad in (0, -1, 1.5, True):
        with refused(InvalidArgument, "limit max_batch_size must be a positive integer", repr(bad)):
            Limits(max_batch_size=bad)  # type: ignore[arg-type]


@given(amount=st.integers(0, 2**40), limit=st.integers(1, 2**40))
def test_check_refuses_exactly_what_is_over_the_limit(amount: int, limit: int) -> None:
    limits = Limits(max_dataset_bytes=limit, max_micro_batches=limit)
    for field, unit in (("max_dataset_bytes", " bytes"), ("max_micro_batches", "")):
        if amount <= limit:
            assert limits.check(field, amount, "it") == amount
        else:
            with refused(ResourceExhausted, f"it is over the limit of {limit}{unit} ({field})"):
                limits.check(field, amount, "it")


# -- streams: cut while they are read ---------------------------------------------------------------------------

def test_an_import_is_cut_as_soon_as_its_bytes_pass_the_limit(orch: Orchestrator) -> None:
    chunk = 1000
    stream, pulled = counted(pb.BlobChunk(name="big", data=b"\0" * chunk) for _ in range(1000))
    with refused(ResourceExhausted, "the imported network artifact is over the limit of 4096 bytes",
                 "max_artifact_bytes"):
        OrchestratorServicer(orch).ImportNetwork(stream, None)  # type: ignore[arg-type]
    assert pulled[0] == SMALL.max_artifact_bytes // chunk + 1  # the chunk that passed it is the last read
    assert orch.store.list_networks() == []


def upload(pieces: list[tuple[str, bool]], name: str = "big") -> list[pb.DatasetUpload]:
    return [pb.DatasetUpload(name=name, vocabulary="v")] + [pb.DatasetUpload(text=t, end_of_document=e)
                                                             for t, e in pieces]


def test_a_dataset_upload_is_cut_at_the_piece_that_passes_a_limit(trained: Orchestrator) -> None:
    before = objects(trained)
    long_document = (pb.DatasetUpload(text="x" * 100) for _ in range(1000))
    many_documents = (pb.DatasetUpload(text="y" * 100, end_of_document=True) for _ in range(1000))
    many_empty = (pb.DatasetUpload(end_of_document=True) for _ in range(1000))
    for stream, read, texts in [
        (long_document, 3, ("dataset 'big': document 1 is over the limit of 256 bytes (max_document_bytes)",)),
        (many_documents, 82, ("dataset 'big': the text is over the limit of 8192 bytes (max_dataset_bytes)",)),
        (many_empty, 101, ("dataset 'big': the number of documents is over the limit of 100",
                              "(max_dataset_documents)")),
    ]:
        counting, pulled = counted(stream)
        with refused(ResourceExhausted, *texts):
            OrchestratorServicer(trained).CreateDataset(itertools.chain(upload([]), counting), None)  # type: ignore
        assert pulled[0] == read
        assert [d["name"] for d in trained.data.list_datasets()] == ["d"] and objects(trained) == before
    info = trained.data.create_dataset("big", "v", TEXTS[:10])  # the name was left free
    assert info["tokens"] > 0


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.tuples(st.text(max_size=6), st.booleans()), max_size=20), cap=st.integers(1, 24))
def test_documents_are_joined_and_the_first_one_over_the_limit_is_refused_at_once(
        pieces: list[tuple[str, bool]], cap: int) -> None:
    want, current, cut = [], "", None  # the documents, and the piece at which one passes the cap
    for i, (text, end) in enumerate(pieces, 1):
        current += text
        if len(current.encode()) > cap:
            cut = i
            break
        if end:
            want.append(current)
            current = ""
    if cut is None and current:
        want.append(current)
    first, *rest = upload(pieces)
    stream, pulled = counted(iter(rest))
    got: list[str] = []
    if cut is None:
        got.extend(_documents(first, stream, Limits(max_document_bytes=cap)))
        assert (got, pulled[0]) == (want, len(pieces))
    else:
        with refused(ResourceExhausted, f"document {len(want) + 1} is over the limit of {cap} bytes"):
            got.extend(_documents(first, stream, Limits(max_document_bytes=cap)))
        assert (got, pulled[0]) == (want, cut)


def test_the_data_store_counts_the_texts_of_any_caller(trained: Orchestrator) -> None:
    before = objects(trained)
    docs, pulled = counted("z" * 200 for _ in range(1000))
    with refused(ResourceExhausted, "dataset 'e': the text is over the limit of 8192 bytes (max_dataset_bytes)"):
        trained.data.create_dataset("e", "v", docs)
    assert pulled[0] == 41  # 40 texts of 200 bytes fit; the 41st is the last one read
    with refused(ResourceExhausted, "dataset 'e': document 2 is over the limit of 256 bytes"):
        trained.data.create_dataset("e", "v", ["a", "é" * 129])  # 258 bytes in UTF-8, 129 characters
    assert [d["name"] for d in trained.data.list_datasets()] == ["d"] and objects(trained) == before


def test_encoding_takes_texts_a_few_megabytes_at_a_time(trained: Orchestrator,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datastore_module, "CHUNK_BYTES", 250)
    tok = trained.data.tokenizer("v")
    texts = [(t, len(t.encode())) for t in TEXTS[:20]]
    batches: list[list[int]] = []  # the sizes of the texts of each `encode_batch` call

    class Recording:
        def token_to_id(self, token: str) -> int | None:
            return tok.token_to_id(token)

        def encode_batch(self, chunk: list[str], add_special_tokens: bool) -> Any:
            batches.append([len(t.encode()) for t in chunk])
            return tok.encode_batch(chunk, add_special_tokens=add_special_tokens)

    ids = datastore_module.DataStore._encode(Recording(), texts)  # type: ignore[arg-type]
    batches = [b for b in batches if b]
    assert [n for b in batches for n in b] == [n for _, n in texts]
    assert all(sum(b[:-1]) < 250 for b in batches)  # a call takes no text after the one that reached 250 bytes
    assert all(sum(b) >= 250 for b in batches[:-1])  # and every call but the last one reaches them
    eos = tok.token_to_id("<eos>")
    assert ids.tolist() == [i for t, _ in texts for i in [*tok.encode(t, add_special_tokens=False).ids, eos]]


# -- counts: refused before anything is allocated ---------------------------------------------------------------

def test_a_huge_micro_batch_count_is_refused_before_the_driver_or_any_allocation(
        trained: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the driver was reached")

    monkeypatch.setattr(trained.driver, "train_step", never)
    empty = torch.zeros(0, 8, dtype=torch.long)  # splits into any number of micro-batches
    tracemalloc.start()
    try:
        with refused(ResourceExhausted, f"micro_batches {HUGE} is over the limit of 1024 (max_micro_batches)"):
            trained.serving.train("small", {"tokens": empty, "targets": empty}, HUGE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    with refused(ResourceExhausted, f"micro_batches {HUGE} is over the limit of 1024"):
        trained.sessions.create("small", "d", 10, 2, HUGE, 0)
    assert trained.store.get_network("small").step == 0 and trained.sessions.list() == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(0, 40), micro=st.integers(0, 1100))
def test_a_session_is_refused_exactly_when_a_count_is_over_its_limit(trained: Orchestrator, batch: int,
                                                                    micro: int) -> None:
    before = trained.sessions.list()
    try:
        rec = trained.sessions.create("small", "d", 10, batch, micro, 0)
    except ResourceExhausted as e:
        assert micro > 1024 or batch > 8, e
        assert trained.sessions.list() == before
        return
    except ValueError as e:
        assert micro <= 1024 and batch <= 8 and (batch < 1 or batch % max(micro, 1)), e
        return
    assert micro <= 1024 and 1 <= batch <= 8
    trained.sessions.delete(rec.id)


@pytest.mark.parametrize("call, texts", [
    (lambda o: o.serving.forward("small", {"tokens": torch.zeros(9, 0, dtype=torch.long)}),
     ("input 'tokens': a batch of 9 is over the limit of 8 (max_batch_size)",)),
    (lambda o: o.serving.train("small", {"tokens": torch.zeros(9, 8, dtype=torch.long),
                                         "targets": torch.zeros(9, 8, dtype=torch.long)}),
     ("a batch of 9 is over the limit of 8",)),
    (lambda o: o.serving.forward("small", {"text": ["a"] * 9}), ("input 'text': a batch of 9",)),
    (lambda o: o.serving.validate("small", "d", batches=5), ("batches 5 is over the limit of 4",)),
    (lambda o: o.serving.validate("small", "d", batch_size=HUGE), (f"batch_size {HUGE} is over the limit of 8",)),
    (lambda o: o.sessions.create("small", "d", 10, 16, 1, 0), ("batch_size 16 is over the limit of 8",)),
    (lambda o: list(o.serving.chat("small", "the", "v", max_new_tokens=6)),
     ("max_new_tokens 6 is over the limit of 5 (max_chat_tokens)",)),
    (lambda o: next(o.serving.chat("small", "the", "v")), ("max_new_tokens 64",)),
], ids=["forward", "train", "forward-texts", "validate-batches", "validate-batch-size", "session-batch-size",
        "chat-tokens", "chat-default-tokens"])
def test_batches_and_generated_tokens_over_their_limit_are_refused(trained: Orchestrator, call: Any,
                                                                   texts: tuple[str, ...]) -> None:
    with refused(ResourceExhausted, *texts):
        call(trained)
    assert trained.store.get_network("small").step == 0 and trained.sessions.list() == []


def test_a_network_definition_over_the_limit_is_refused(orch: Orchestrator) -> None:
    padded = small_lm() + "#" * SMALL.max_network_yaml_bytes + "\n"
    with refused(ResourceExhausted, "big.yaml: the network definition is over the limit of 65536 bytes",
                 "max_network_yaml_bytes"):
        orch.networks.create(padded, "big.yaml")
    orch.networks.create(small_lm())
    with refused(ResourceExhausted, "max_network_yaml_bytes"):
        orch.networks.update("small", padded)
    assert [(n.name, n.yaml) for n in orch.networks.list_all()] == [("small", small_lm())]


# -- vocabularies ------------------------------------------------------------------------------------------------

def padded_tokenizer() -> str:
    tok = Tokenizer.from_str(vocabulary().to_str())
    tok.enable_padding(length=2**30)  # every encoding 2**30 ids long
    return tok.to_str()


@pytest.mark.parametrize("tokenizer_json, error, texts", [
    (lambda: vocabulary().to_str() + " " * (1 << 20), ResourceExhausted,
     ("vocabulary 'w': the tokenizer JSON is over the limit of 1048576 bytes (max_vocabulary_bytes)",)),
    (lambda: Tokenizer(models.WordLevel({f"w{i}": i for i in range(401)}, unk_token="w0")).to_str(),
     ResourceExhausted, ("vocabulary 'w': the number of tokens (401) is over the limit of 400 (max_vocab_size)",)),
    (lambda: '{"model": ', InvalidArgument, ("vocabulary 'w': not a valid tokenizer JSON",)),
    (lambda: Tokenizer(models.BPE()).to_str(), InvalidArgument, ("vocabulary 'w': the tokenizer has no tokens",)),
    (padded_tokenizer, InvalidArgument, ("vocabulary 'w': the tokenizer pads its encodings",)),
], ids=["too-large", "too-many-tokens", "not-json", "no-tokens", "pads"])
def test_an_uploaded_tokenizer_is_bounded_and_must_parse(trained: Orchestrator, tokenizer_json: Any,
                                                         error: type[Exception], texts: tuple[str, ...]) -> None:
    before = objects(trained)
    with refused(error, *texts):
        datasets.create_vocabulary(trained.data, "w", tokenizer_json=tokenizer_json())
    assert [v["name"] for v in trained.data.list_vocabularies()] == ["v"] and objects(trained) == before
    assert datasets.create_vocabulary(trained.data, "w", tokenizer_json=vocabulary().to_str())["vocab_size"] == 300


def test_training_a_vocabulary_is_bounded_before_it_starts(trained: Orchestrator,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("training started")

    monkeypatch.setattr(datasets, "train_vocabulary", never)
    with refused(ResourceExhausted, "vocabulary 'w': vocab_size 401 is over the limit of 400 (max_vocab_size)"):
        datasets.create_vocabulary(trained.data, "w", texts=TEXTS, vocab_size=401)
    with refused(ResourceExhausted, "vocabulary 'w': vocab_size 4096 is over the limit of 400"):
        datasets.create_vocabulary(trained.data, "w", texts=TEXTS)  # the default size
    with refused(ResourceExhausted, "vocabulary 'w': the training text is over the limit of 8192 bytes",
                 "max_training_text_bytes"):
        datasets.create_vocabulary(trained.data, "w", texts=TEXTS * 3, vocab_size=300)
    assert [v["name"] for v in trained.data.list_vocabularies()] == ["v"]
