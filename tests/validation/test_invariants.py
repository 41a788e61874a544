"""The cheap invariants checked on every report before any sampling: costs are floating-point scalars, and a
gradient norm far above a VNode's recent ones (or not finite) draws its unit for verification; the policy text."""

from __future__ import annotations

from types import SimpleNamespace

import hypothesis.strategies as st
import pytest
import torch
import yaml
from hypothesis import given

import dcnr
from dcnr.orchestrator.driver import _odd_costs
from dcnr.orchestrator.validator import Validator, _Timeline
from dcnr.spec.passes import plan
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.messages import Commitment
from dcnr.validation.policy import Policy

EXEC = plan(dcnr.parse_network(yaml.safe_dump(transformer_lm("inv", blocks=1, heads=2, head_dim=4, dim=8, seq_len=6,
                                                                vocab_size=30)))).spec


def test_a_cost_that_is_not_a_floating_point_scalar_fails_the_step_naming_its_pnode() -> None:
    hosts = {"loss": "pn-x"}
    assert _odd_costs({(0, "loss", 0): torch.tensor(1.5)}, hosts) == ""
    assert "PNode pn-x reported a torch.float32 tensor of shape [2]" in _odd_costs(
        {(0, "loss", 0): torch.ones(2)}, hosts)
    assert "a cost is a floating-point scalar" in _odd_costs({(1, "loss", 0): torch.tensor(3)}, hosts)
    assert "reported list" in _odd_costs({(0, "loss", 0): ["text"]}, hosts)


def test_a_gradient_norm_outlier_or_a_non_finite_one_draws_its_unit() -> None:
    validator = Validator(SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    tl = _Timeline()
    try:
        def norms(value: float) -> set[str]:
            c = Commitment("b0_fc1", "s", {"k": "d"}, grad_norm=value)
            return validator._flagged(tl, {"b0_fc1": ("p", c)}, EXEC)

        assert [norms(v) for v in (1.0, 1.2, 0.9, 1.1, 5.0)] == [set()] * 5  # within 10x of the median
        assert norms(50.0) == {"b0_fc1"}
        assert norms(float("nan")) == {"b0_fc1"}
        assert norms(1.0) == set()
    finally:
        validator.close()


def test_policies_parse_and_print_back() -> None:
    assert str(Policy.parse("OFF")) == "off" and Policy.parse("off").rate_for(False) == 0.0
    full = Policy.parse("full")
    assert full.rate_for(True) == full.rate_for(False) == 1.0
    sampled = Policy.parse(" sample:0.05 ")
    assert str(sampled) == "sample:0.05" and sampled.rate_for(False) == 0.05
    assert sampled.rate_for(True) == pytest.approx(0.005)  # trusted: a tenth, never zero


@given(st.text(max_size=30) | st.sampled_from(["sample:0.123456789", "sample:1", "FULL", "sample:0"]))
def test_anything_else_is_refused_with_one_line_saying_what_is_expected(text: str) -> None:
    try:
        policy = Policy.parse(text)
    except ValueError as exc:
        assert "\n" not in str(exc) and "off, full or sample:P" in str(exc)
    else:
        assert policy.mode in ("off", "sample", "full") and 0.0 <= policy.rate <= 1.0
        assert Policy.parse(str(policy)) == policy
