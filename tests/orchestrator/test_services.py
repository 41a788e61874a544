"""The orchestrator's services used directly, with no server and no PNode: the rules they enforce
raise our errors, and none of them needs gRPC."""

from __future__ import annotations

import ast
import functools
import math
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import Tokenizer

import dcnr
from dcnr.data import train_vocabulary
from dcnr.errors import (
    AlreadyExists,
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    NetworkError,
    NotFound,
    ResourceExhausted,
)
from dcnr.orchestrator import datasets
from dcnr.orchestrator.app import Orchestrator
from dcnr.orchestrator.limits import Limits
from dcnr.orchestrator.store import SessionRecord
from dcnr.spec.transformer import transformer_lm

ORCHESTRATOR = Path(dcnr.__file__).parent / "orchestrator"
TEXTS = [f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13} times." for i in range(60)]
TOKENIZER_YAML = ("name: tok\nnodes:\n  - {id: t, type: tokenizer, config: {vocab_size: 300, pad_length: 4, "
                  "vocabulary: v}}\ninputs: [{name: x, node_id: t}]\noutputs: [{name: y, node_id: t}]\n")


@functools.cache
def vocabulary() -> Tokenizer:
    return train_vocabulary(TEXTS, 300)


def small_lm() -> str:
    doc = transformer_lm("small", blocks=1, heads=2, head_dim=8, dim=16, seq_len=8, vocab_size=300, dropout=0.0)
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture()
def orch(tmp_path: Path) -> Iterator[Orchestrator]:
    o = Orchestrator(tmp_path / "state")  # wired, never started: no server
    yield o
    o.stop()


def running_session(o: Orchestrator, network: str = "small", dataset: str = "d") -> str:
    o.store.put_session(SessionRecord("s1", network, dataset, steps=10, batch_size=2, micro_batches=1, seed=0,
                                      state="running"))
    return "s1"


def test_the_services_import_no_grpc_and_no_generated_code() -> None:
    for name in ("networks", "serving", "datasets", "blob_access", "app"):
        tree = ast.parse((ORCHESTRATOR / f"{name}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m == "grpc" or m.startswith("dcnr.proto")}, name


def test_a_created_network_is_described_as_its_definition_says(orch: Orchestrator) -> None:
    text = small_lm()
    info = orch.networks.create(text, "small.yaml")
    spec = dcnr.parse_network(text)
    ex = dcnr.LocalExecutor(spec)
    assert (info.name, info.yaml, info.step) == ("small", text, 0)
    assert info.vnodes == len(ex.spec.nodes) < len(spec.nodes)  # the VNodes that run: heads fused
    assert info.parameters == sum(t.numel() for t in ex.parameters().values())  # counted on real tensors
    assert datetime.fromisoformat(info.created_at).tzinfo is not None
    assert orch.networks.list_all() == [info] and orch.networks.placements("small") == []


def test_a_tokenizer_naming_an_unknown_vocabulary_is_refused_with_one_line(orch: Orchestrator) -> None:
    with pytest.raises(NetworkError) as info:
        orch.networks.create(TOKENIZER_YAML, "nets/tok.yaml")
    assert info.value.problems == ["nets/tok.yaml: node 't': config.vocabulary: unknown vocabulary 'v'; stored: none"]
    assert orch.store.list_networks() == []
    datasets.create_vocabulary(orch.data, "v", tokenizer_json=vocabulary().to_str())
    assert orch.networks.create(TOKENIZER_YAML, "nets/tok.yaml").name == "tok"


def test_a_network_being_trained_cannot_be_redefined_deleted_or_stepped(orch: Orchestrator) -> None:
    orch.networks.create(small_lm())
    session = running_session(orch)
    x = torch.zeros(2, 8, dtype=torch.long)
    for attempt in (lambda: orch.networks.update("small", small_lm()), lambda: orch.networks.delete("small"),
                    lambda: orch.serving.train("small", {"tokens": x, "targets": x})):
        with pytest.raises(Conflict, match=f"network 'small' is being trained by session {session}; suspend it"):
            attempt()
    assert [n.name for n in orch.networks.list_all()] == ["small"]


def test_unknown_names_and_missing_arguments(orch: Orchestrator) -> None:
    with pytest.raises(NotFound, match="unknown network 'nope'"):
        orch.networks.delete("nope")
    with pytest.raises(NotFound, match="unknown session 'nope'"):
        orch.networks.export_checkpoint("nope")
    orch.networks.create(small_lm())
    session = running_session(orch)
    with pytest.raises(NotFound, match=f"session {session} has no checkpoint at step 3"):
        orch.networks.export_checkpoint(session, 3)
    with pytest.raises(InvalidArgument, match="a clone needs a new name"):
        orch.networks.clone("small", "")
    with pytest.raises(InvalidArgument, match="either tokenizer JSON or texts"):
        datasets.create_vocabulary(orch.data, "v")


def test_chat_uses_the_only_vocabulary_or_asks_which(orch: Orchestrator) -> None:
    orch.networks.create(small_lm())
    with pytest.raises(InvalidArgument, match=r"name its vocabulary \(one of: none stored\)"):
        orch.serving.vocabulary_of("small")
    trained = datasets.create_vocabulary(orch.data, "v", texts=TEXTS, vocab_size=300)
    assert trained["vocab_size"] == vocabulary().get_vocab_size()  # trained here as `train_vocabulary` does
    assert orch.serving.vocabulary_of("small") == "v"
    datasets.create_vocabulary(orch.data, "w", tokenizer_json=vocabulary().to_str())
    with pytest.raises(InvalidArgument, match=r"one of: v, w\)"):
        orch.serving.vocabulary_of("small")


def test_a_dataset_feeding_a_running_session_cannot_be_deleted(orch: Orchestrator) -> None:
    datasets.create_vocabulary(orch.data, "v", tokenizer_json=vocabulary().to_str())
    info = orch.data.create_dataset("d", "v", TEXTS, 0.1)
    assert info["tokens"] > 0 and math.isclose(info["validation_tokens"] / info["tokens"], 0.1, abs_tol=0.05)
    running_session(orch, dataset="d")
    with pytest.raises(Conflict, match="dataset 'd' feeds running session s1; suspend it first"):
        datasets.delete_dataset(orch.data, orch.store, "d")
    orch.sessions.suspend("s1")
    assert datasets.delete_dataset(orch.data, orch.store, "d")
    with pytest.raises(NotFound, match="unknown dataset 'd'"):
        datasets.delete_dataset(orch.data, orch.store, "d")


def test_an_evaluation_is_bounded_in_batches_and_in_time(orch: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four billion batches kept the orchestrator evaluating long after the caller gave up (found by fuzzing)."""
    orch.networks.create(small_lm())
    datasets.create_vocabulary(orch.data, "v", tokenizer_json=vocabulary().to_str())
    orch.data.create_dataset("d", "v", TEXTS, 0.1)
    limits = Limits()
    for batches, size, what in ((2**32 - 1, 8, f"batches {2**32 - 1}"), (4, 2**31, f"batch_size {2**31}"),
                                (limits.max_validation_batches + 1, 1, f"batches {limits.max_validation_batches + 1}")):
        with pytest.raises(ResourceExhausted, match=f"{what} is over the limit"):
            orch.serving.validate("small", "d", batches, size)
    evaluated: list[int] = []

    def slow_costs(network: str, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
        evaluated.append(int(inputs["tokens"].shape[0]))
        time.sleep(0.2)
        return {"loss": 1.0}

    monkeypatch.setattr(orch.driver, "costs", slow_costs)
    monkeypatch.setattr(orch.driver, "timeout", 0.5)
    with pytest.raises(DeadlineExceeded, match=r"took longer than 0.5 s after \d of 1000 batches"):
        orch.serving.validate("small", "d", 1000, 2)
    assert 1 <= len(evaluated) <= 3 and set(evaluated) == {2}  # about 0.5 s of 0.2 s batches


def test_a_clone_with_a_bad_or_taken_name_is_refused_before_the_source_is_exported(
        orch: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exporting places the source and builds its VNodes: a fuzzed clone refused afterwards for its name had
    changed the PNodes' state."""
    orch.networks.create(small_lm())

    def export(name: str) -> bytes:
        raise AssertionError(f"{name} was exported")

    monkeypatch.setattr(orch.networks, "export", export)
    with pytest.raises(ValueError, match="invalid network name 'a b'"):  # INVALID_ARGUMENT, as any ValueError
        orch.networks.clone("small", "a b")
    with pytest.raises(AlreadyExists, match="network 'small' already exists"):
        orch.networks.clone("small", "small")
