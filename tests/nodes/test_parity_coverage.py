"""Every type and alias of the catalog has parity tests in this directory."""

from __future__ import annotations

from pathlib import Path

from dcnr.nodes.registry import NODE_TYPES, TYPE_NAMES

HERE = Path(__file__).parent

# every accepted spelling -> the file holding its parity tests
COVERED = {
    "linear": "test_parity_linear_embedder.py",
    "dense": "test_parity_linear_embedder.py",
    "embedder": "test_parity_linear_embedder.py",
    "layernorm": "test_parity_pointwise.py",
    "attention_head": "test_parity_attention.py",
    "singleheadattention": "test_parity_attention.py",
    "attention": "test_parity_attention.py",
    "multiheadattention": "test_parity_attention.py",
    "tied_lm_head_ce": "test_parity_lm_head.py",
    "fusedlmheadce": "test_parity_lm_head.py",
    "relu": "test_parity_pointwise.py",
    "gelu": "test_parity_pointwise.py",
    "silu": "test_parity_pointwise.py",
    "swiglu": "test_parity_pointwise.py",
    "dropout": "test_parity_dropout_mask.py",
    "broadcast": "test_parity_structure.py",
    "stack": "test_parity_structure.py",
    "add": "test_parity_structure.py",
    "reshape": "test_parity_structure.py",
    "mask": "test_parity_dropout_mask.py",
    "tokenizer": "test_parity_text.py",
    "detokenizer": "test_parity_text.py",
    "cost": "test_parity_cost.py",
}


def test_every_type_and_alias_is_covered() -> None:
    """A new type or alias in the registry fails here until it gets parity tests."""
    assert set(COVERED) == set(TYPE_NAMES), sorted(set(TYPE_NAMES) ^ set(COVERED))
    assert {TYPE_NAMES[name] for name in COVERED} == set(NODE_TYPES)
    for name, file in COVERED.items():
        assert f'"{name}"' in (HERE / file).read_text(encoding="utf-8"), f"{name} is not used in {file}"


def test_cost_functions_are_covered() -> None:
    """mse, ce and ce_logits all appear in the cost parity tests."""
    text = (HERE / "test_parity_cost.py").read_text(encoding="utf-8")
    for function in ("mse", "ce", "ce_logits"):
        assert f'"{function}"' in text
