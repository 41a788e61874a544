"""`tokenizer` and `detokenizer` against the `tokenizers` library, with a vocabulary trained here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import dcnr
from dcnr import LocalExecutor

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a volunteer network trains one shared model",
    "tokens become ids and ids become text again",
    "hello world, hello tokens; numbers 12345 and symbols !?",
] * 20
TEXTS = ["the quick brown fox", "hello world", "ids become text", "zebra 42 ünïcode ✓"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Tokenizer]:
    """A small byte-level BPE vocabulary with <pad>, <bos>, <eos>, saved as JSON."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    path = Path(tmp_path_factory.mktemp("vocab")) / "bpe.json"
    tok.save(str(path))
    return str(path), Tokenizer.from_file(str(path))


def text_network(kit, path: str, vocab_size: int, pad_length: int, boundaries: bool = False):
    return kit.network(
        [kit.node("tok", "tokenizer", vocab_size=vocab_size, pad_length=pad_length, vocab_path=path,
                  use_word_boundary_tokens=boundaries),
         kit.node("detok", "detokenizer", vocab_size=vocab_size, vocab_path=path)],
        [kit.edge("tok", "detok")],
        [kit.bind("text", "tok")],
        outputs=[kit.bind("ids", "tok"), kit.bind("text", "detok")],
    )


def expected_ids(tok: Tokenizer, text: str, pad_length: int, boundaries: bool) -> list[int]:
    ids = tok.encode(text, add_special_tokens=False).ids
    if boundaries:
        ids = [tok.token_to_id("<bos>"), *ids, tok.token_to_id("<eos>")]
    ids = ids[:pad_length]
    return ids + [tok.token_to_id("<pad>")] * (pad_length - len(ids))


@pytest.mark.parametrize("boundaries", [False, True], ids=["plain", "bos-eos"])
def test_round_trip(kit, vocab: tuple[str, Tokenizer], boundaries: bool) -> None:
    """text -> ids -> text through tokenizer -> detokenizer returns the texts; ids are the library's
    encoding, right-padded with <pad> to pad_length (wrapped in <bos>/<eos> when configured)."""
    path, tok = vocab
    pad_length = 48
    out = LocalExecutor(text_network(kit, path, 512, pad_length, boundaries)).forward({"text": TEXTS})
    ids = out["ids"]
    assert ids.dtype == torch.long and tuple(ids.shape) == (len(TEXTS), pad_length)
    for row, text in zip(ids.tolist(), TEXTS, strict=True):
        assert row == expected_ids(tok, text, pad_length, boundaries)
        if boundaries:
            assert row[0] == tok.token_to_id("<bos>")
            assert tok.token_to_id("<eos>") in row
    assert out["text"] == TEXTS


def test_truncation(kit, vocab: tuple[str, Tokenizer]) -> None:
    """Texts longer than pad_length are cut to pad_length ids (with boundaries, <eos> is cut first),
    and detokenizing gives the decoded prefix."""
    path, tok = vocab
    long = "the quick brown fox jumps over the lazy dog " * 3
    n = len(tok.encode(long, add_special_tokens=False).ids)
    pad_length = 5
    assert n > pad_length + 2
    for boundaries in (False, True):
        out = LocalExecutor(text_network(kit, path, 512, pad_length, boundaries)).forward({"text": [long, "a"]})
        row = out["ids"][0].tolist()
        assert row == expected_ids(tok, long, pad_length, boundaries)
        assert tok.token_to_id("<eos>") not in row and tok.token_to_id("<pad>") not in row
        assert out["text"][0] == tok.decode(row, skip_special_tokens=True)
        assert long.startswith(out["text"][0]) and len(out["text"][0]) < len(long)
        assert out["text"][1] == "a"


def test_vocab_size_is_checked(kit, vocab: tuple[str, Tokenizer]) -> None:
    """A vocabulary larger than the configured vocab_size is refused (not silently used)."""
    path, tok = vocab
    ex = LocalExecutor(text_network(kit, path, tok.get_vocab_size() - 1, 8))
    with pytest.raises(ValueError, match="vocab_size"):
        ex.forward({"text": ["hello"]})


def test_tokenizer_feeds_training(kit, vocab: tuple[str, Tokenizer], micro_batches: int) -> None:
    """A tokenizer in front of an embedder: training on raw text gives the gradients of the
    library's token ids (the non-differentiable tokenizer passes no gradient)."""
    path, tok = vocab
    pad_length, dim, size = 8, 3, tok.get_vocab_size()
    spec = kit.network(
        [kit.node("tok", "tokenizer", vocab_size=size, pad_length=pad_length, vocab_path=path),
         kit.node("emb", "embedder", vocab_size=size, dim=dim, seq_len=pad_length, position_encoding="learned"),
         kit.node("loss", "cost", cost_function="mse")],
        [kit.edge("tok", "emb"), kit.edge("emb", "loss")],
        [kit.bind("text", "tok"), kit.bind("target", "loss", 1)],
        costs=[kit.bind("loss", "loss")],
    )
    ex = LocalExecutor(spec, seed=0)
    params = kit.randomize(ex, seed=61, scale=1.0)
    target = torch.randn(len(TEXTS), pad_length, dim, generator=torch.Generator().manual_seed(62))
    ids = torch.tensor([expected_ids(tok, t, pad_length, False) for t in TEXTS])

    leaves = kit.make_leaves(params)
    y = leaves["emb.weight"][ids] + leaves["emb.position"]
    loss_ref = kit.mse(y, target)
    loss_ref.backward()
    loss = ex.train_step({"text": TEXTS, "target": target}, micro_batches=micro_batches, update=False)["loss"]
    kit.check_loss(loss, loss_ref)
    kit.check_grads(ex, leaves, "tokenizer -> embedder")


@pytest.mark.parametrize("extra", ["", ", vocab_path: a.json, vocabulary: v"])
def test_a_vocabulary_comes_from_exactly_one_place(extra: str) -> None:
    text = ("nodes:\n  - {id: t, type: tokenizer, config: {vocab_size: 10, pad_length: 4" + extra + "}}\n"
            "inputs: [{name: x, node_id: t}]\n")
    with pytest.raises(dcnr.NetworkError) as info:
        dcnr.parse_network(text, source="n.yml")
    assert info.value.problems == ["n.yml: nodes[0] 't': config: expected exactly one of vocab_path (a file) "
                                   "or vocabulary (a stored vocabulary id)"]


def test_a_stored_vocabulary_needs_a_cluster() -> None:
    spec = dcnr.parse_network("nodes:\n  - {id: t, type: tokenizer, config: {vocab_size: 10, pad_length: 4, "
                              "vocabulary: v}}\ninputs: [{name: x, node_id: t}]\noutputs: [{name: y, node_id: t}]\n")
    with pytest.raises(ValueError, match="stored by an orchestrator"):
        dcnr.LocalExecutor(spec).forward({"x": ["a"]})
