"""Text nodes get their vocabulary from the run (`Vocabularies`), never by changing the validated node."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

import dcnr
from dcnr.data.vocabularies import Vocabularies
from dcnr.runtime.executor import build_vnodes
from dcnr.runtime.vnode import RequestId

NETWORK = """\
name: text
nodes:
  - {id: tok, type: tokenizer, config: {vocab_size: 300, pad_length: 8, vocabulary: v}}
  - {id: detok, type: detokenizer, config: {vocab_size: 300, vocabulary: v}}
edges: [{from: tok, to: detok}]
inputs: [{name: text, node_id: tok}]
outputs: [{name: ids, node_id: tok}, {name: echo, node_id: detok}]
"""
TEXTS = ["the quick brown fox", "lazy dog"]


@pytest.fixture(scope="module")
def vocab_json() -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>"], show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 10, trainer=trainer)
    return str(tok.to_str())


def run(vocabularies: Vocabularies | None) -> tuple[torch.Tensor, list[str]]:
    spec = dcnr.parse_network(NETWORK)
    vnodes = build_vnodes(spec, 0, torch.device("cpu"), vocabularies=vocabularies)
    rid = RequestId("r", 0, 0, "infer")
    (ids,) = vnodes["tok"].run_forward(rid, [TEXTS], training=False)
    (echo,) = vnodes["detok"].run_forward(rid, [ids], training=False)
    return ids, echo


def test_stored_vocabulary_comes_from_the_resolver_once(vocab_json: str) -> None:
    """Both nodes resolve the stored id through the given source, which is asked once, and the
    ids are the library's encoding padded with <pad>."""
    asked: list[str] = []

    def stored(name: str) -> str:
        asked.append(name)
        return vocab_json

    ids, echo = run(Vocabularies(stored))
    ref = Tokenizer.from_str(vocab_json)
    want = ref.encode("lazy dog", add_special_tokens=False).ids
    assert ids[1].tolist() == want + [ref.token_to_id("<pad>")] * (8 - len(want))
    assert echo == [ref.decode(ref.encode(t, add_special_tokens=False).ids) for t in TEXTS]
    assert asked == ["v"]


def test_stored_vocabulary_without_a_resolver_is_a_clear_error() -> None:
    """Run where no orchestrator stores vocabularies, the node says so and what to do instead."""
    with pytest.raises(ValueError, match=r"'tok': vocabulary 'v' is stored by an orchestrator; run the network "
                                         r"on a cluster, or give vocab_path"):
        run(None)


def test_vocabulary_larger_than_vocab_size_is_refused(vocab_json: str) -> None:
    """A vocabulary with more tokens than the node's vocab_size is refused, naming both."""
    small = NETWORK.replace("vocab_size: 300, pad_length", "vocab_size: 10, pad_length")
    spec = dcnr.parse_network(small)
    vnodes = build_vnodes(spec, 0, torch.device("cpu"), vocabularies=Vocabularies(lambda name: vocab_json))
    size = Tokenizer.from_str(vocab_json).get_vocab_size()
    with pytest.raises(ValueError, match=rf"'tok': vocabulary 'v' has {size} tokens, more than vocab_size 10"):
        vnodes["tok"].run_forward(RequestId("r", 0, 0, "infer"), [TEXTS], training=False)


def test_vocabularies_without_files_never_open_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a PNode uses for the networks it receives: a file a node names is never opened, even one that exists."""
    vocab = tmp_path / "v.json"
    vocab.write_text("{}")
    monkeypatch.setattr("dcnr.data.vocabularies.Tokenizer.from_file", lambda name: pytest.fail(f"read {name}"))
    with pytest.raises(ValueError, match="files are not read here"):
        Vocabularies(files=False).load("tok", str(vocab), None)
