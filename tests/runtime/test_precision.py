"""Mixed precision (SPEC §5): fp16/bf16 compute, fp32 masters, dynamic loss scaling."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import yaml

import dcnr
from dcnr.spec.transformer import transformer_lm

STEPS = 30
LR = 1e-2
LOW = {"fp16": torch.float16, "bf16": torch.bfloat16}



def small_lm(precision: str = "float32", node_precision: dict[str, str] | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The §13 topology, shrunk; `node_precision` overrides `precision` on nodes by id prefix."""
    doc = transformer_lm("prec", blocks=2, heads=2, head_dim=8, dim=16, seq_len=8, vocab_size=50, ffn_dim=32,
                         head_hidden=64, dropout=0.0, precision=precision, lr=LR, seed=0, extra_config=extra)
    for node in doc["nodes"]:
        for prefix, prec in (node_precision or {}).items():
            if node["id"].startswith(prefix):
                node["config"]["precision"] = prec
    return doc


def executor(doc: dict[str, Any]) -> dcnr.LocalExecutor:
    return dcnr.LocalExecutor(dcnr.parse_network(yaml.safe_dump(doc)))


def toy_batch() -> dict[str, torch.Tensor]:
    """A learnable sequence: token t is always followed by (t + 3) mod 18, in four phases."""
    seqs = torch.tensor([[(i + o) % 6 * 3 for i in range(9)] for o in range(4)])  # (4, 9)
    return {"tokens": seqs[:, :-1], "targets": seqs[:, 1:]}


def train(ex: dcnr.LocalExecutor, steps: int = STEPS) -> list[float]:
    losses = []
    for _ in range(steps):
        losses.append(ex.train_step(toy_batch(), micro_batches=2)["ce_loss"])
    return losses


def optimizer_tensors(ex: dcnr.LocalExecutor) -> dict[str, torch.Tensor]:
    return {f"{nid}.{k}": t.clone() for nid, v in ex.vnodes.items() for k, t in v.optimizer_state().items()}


@pytest.fixture(scope="module")
def fp32_losses() -> list[float]:
    return train(executor(small_lm("float32")))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_network_tracks_fp32(precision: str, fp32_losses: list[float]) -> None:
    """fp16/bf16 compute trains without NaN, the loss falls, and follows fp32 step by step."""
    ex = executor(small_lm(precision))
    # the compute really is low precision: logits come out in that dtype
    logits = ex.forward({"tokens": toy_batch()["tokens"]})["logits"]
    assert logits.dtype == LOW[precision]
    assert ex.scaler.enabled == (precision == "fp16")
    losses = train(ex)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert ex.scaler.skipped_steps == 0
    assert losses[-1] < 0.5 * losses[0], losses
    for step, (got, want) in enumerate(zip(losses, fp32_losses, strict=True)):
        assert got == pytest.approx(want, rel=0.05), f"step {step}: {precision} loss {got:.4f}, fp32 {want:.4f}"
    # fp32 master weights and fp32 optimizer state
    for key, value in ex.parameters().items():
        assert value.dtype == torch.float32, key
        assert torch.isfinite(value).all(), key
    state = optimizer_tensors(ex)
    assert state
    for key, value in state.items():
        if value.is_floating_point() and value.dim():
            assert value.dtype == torch.float32, key


@pytest.mark.parametrize("precision, tol", [("fp16", 0.01), ("bf16", 0.05)])
def test_low_precision_gradients_are_unscaled(precision: str, tol: float) -> None:
    """`gradients()` of a loss-scaled fp16 (or bf16) step are the true gradients, near fp32's."""
    want = executor(small_lm("float32"))
    got = executor(small_lm(precision))
    for ex in (want, got):
        ex.train_step(toy_batch(), micro_batches=2, update=False)
    if precision == "fp16":
        assert got.scaler.scale > 1.0  # scaling is in effect, yet the reported gradients are not scaled
    expected = want.gradients()
    for key, value in got.gradients().items():
        ref = expected[key]
        err = float((value - ref).norm() / ref.norm())
        assert err <= tol, f"{key}: relative error {err:.3g} against fp32"


def test_fp16_optimizer_steps_with_unscaled_gradients() -> None:
    """With plain SGD (unlike Adam, not blind to a gradient's scale) one loss-scaled fp16 step
    moves every parameter as the fp32 step does."""
    deltas = {}
    for precision in ("float32", "fp16"):
        ex = executor(small_lm(precision, extra={"optimizer": "sgd", "lr": 0.1}))
        before = ex.parameters()
        ex.train_step(toy_batch(), micro_batches=2)
        deltas[precision] = {k: v - before[k] for k, v in ex.parameters().items()}
    for key, want in deltas["float32"].items():
        got = deltas["fp16"][key]
        err = float((got - want).norm() / want.norm())
        assert err <= 0.02, f"{key}: update differs from fp32 by {err:.3g}"


def test_overflow_skips_the_step_everywhere_and_training_recovers() -> None:
    """An fp16 overflow in some VNodes skips the update in all of them, halves the scale, and
    training carries on. Only block 0 runs in fp16, so other VNodes see finite gradients."""
    ex = executor(small_lm("float32", {"b0_": "fp16"}))
    assert ex.scaler.enabled
    train(ex, steps=2)  # optimizer state exists
    params, state, step = ex.parameters(), optimizer_tensors(ex), ex.step
    ex.scaler.scale = 2.0**40  # far past fp16's range; fine for fp32
    ex.train_step(toy_batch(), micro_batches=2, update=False)
    grads = ex.gradients()
    finite = {k: bool(torch.isfinite(g).all()) for k, g in grads.items()}
    assert not finite["b0_fc1.weight"], "the fp16 block must overflow"
    assert finite["head_up.weight"], "fp32 nodes must have finite gradients, to prove the skip is global"
    assert ex.update() is False
    assert ex.scaler.scale == 2.0**39
    assert ex.scaler.skipped_steps == 1
    for key, value in ex.parameters().items():
        assert torch.equal(value, params[key]), f"{key} changed on a skipped step"
    for key, value in optimizer_tensors(ex).items():
        assert torch.equal(value, state[key]), f"optimizer state {key} changed on a skipped step"
    for key, g in ex.gradients().items():
        assert not g.any(), f"{key}: gradients must be cleared after a skipped step"
    assert ex.step == step + 1
    # the scale keeps halving while it overflows, then updates resume
    applied = 0
    for _ in range(60):
        ex.train_step(toy_batch(), micro_batches=2, update=False)
        applied += ex.update()
        if applied == 10:
            break
    assert applied == 10, f"training did not recover (scale {ex.scaler.scale})"
    assert 1.0 <= ex.scaler.scale <= 2.0**24
    after = ex.parameters()
    assert any(not torch.equal(after[k], params[k]) for k in params)
    assert all(torch.isfinite(v).all() for v in after.values())
    loss = ex.train_step(toy_batch(), micro_batches=2, update=False)["ce_loss"]
    assert loss < 3.0


def test_loss_scale_grows_after_a_run_of_good_steps() -> None:
    """After `growth_interval` finite steps the scale doubles; an overflow halves it."""
    ex = executor(small_lm("fp16"))
    ex.scaler.growth_interval = 3
    start = ex.scaler.scale
    train(ex, steps=2)
    assert ex.scaler.scale == start
    train(ex, steps=1)
    assert ex.scaler.scale == 2 * start


@pytest.mark.parametrize("low", ["fp16", "bf16"])
def test_network_mixing_precisions_per_node_trains(low: str, fp32_losses: list[float]) -> None:
    """Per-node `precision` overrides: block 0 in low precision, the rest fp32, trains like fp32."""
    ex = executor(small_lm("float32", {"b0_": low}))
    nodes = ex.spec.nodes
    assert nodes["b0_fc1"].activation_precision == low and nodes["b0_fc1"].param_precision == low
    assert nodes["b1_fc1"].activation_precision == "float32"
    assert ex.vnodes["b0_fc1"]._compute_params()["weight"].dtype == LOW[low]
    assert ex.vnodes["b1_fc1"]._compute_params()["weight"].dtype == torch.float32
    assert ex.scaler.enabled == (low == "fp16")
    losses = train(ex)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
    for step, (got, want) in enumerate(zip(losses, fp32_losses, strict=True)):
        assert got == pytest.approx(want, rel=0.05), f"step {step}"
    assert all(v.dtype == torch.float32 for v in ex.parameters().values())
