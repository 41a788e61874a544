"""Fused and unfused execution of one network (SPEC §6): same start, same losses and gradients
within fp32 tolerance, each deterministic, and one state format that loads either way."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import dcnr
from dcnr.artifact import ARTIFACT_FORMAT, artifact_metadata, executed_state, read_tensors, written_state
from dcnr.spec.transformer import transformer_lm

ROOT = Path(__file__).resolve().parents[2]
VOCAB, SEQ = 40, 8


def lm_doc(fuse: bool, dropout: float = 0.1) -> dict[str, Any]:
    """2 blocks × 3 heads, dim 24, dropout on: the §13 structure, small."""
    doc = transformer_lm("fusion", blocks=2, heads=3, head_dim=8, dim=24, seq_len=SEQ, vocab_size=VOCAB,
                         ffn_dim=32, head_hidden=48, dropout=dropout, lr=3e-3, seed=5)
    doc["fuse"] = fuse
    return doc


def lm(fuse: bool, dropout: float = 0.1) -> dcnr.LocalExecutor:
    return dcnr.LocalExecutor(dcnr.parse_network(yaml.safe_dump(lm_doc(fuse, dropout))))


def batch(step: int, n: int = 4) -> dict[str, torch.Tensor]:
    seqs = torch.randint(0, VOCAB, (n, SEQ + 1), generator=torch.Generator().manual_seed(50 + step))
    return {"tokens": seqs[:, :-1], "targets": seqs[:, 1:]}


def assert_close_maps(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rtol: float, atol: float) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=rtol, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def assert_equal_maps(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), f"{key} differs"


def test_the_fused_graph_is_smaller_and_starts_from_the_same_parameters() -> None:
    fused, plain = lm(True), lm(False)
    # per block broadcast + 3 heads + stack -> 1; the cost becomes tied_lm_head_ce and lm_head stays
    # (it is the `logits` output)
    assert len(plain.vnodes) - len(fused.vnodes) == 2 * 4
    assert_equal_maps(fused.parameters(), plain.parameters())


def test_one_step_gives_the_same_loss_and_gradients_per_written_parameter() -> None:
    fused, plain = lm(True), lm(False)
    data = batch(0)
    got = fused.train_step(data, micro_batches=2, update=False)["ce_loss"]
    want = plain.train_step(data, micro_batches=2, update=False)["ce_loss"]
    assert got == pytest.approx(want, rel=1e-5)
    grads, ref = fused.gradients(), plain.gradients()
    assert all(float(g.norm()) > 0 for g in ref.values()), "a zero gradient would make the comparison vacuous"
    for key in ref:
        err = float((grads[key] - ref[key]).norm() / ref[key].norm())
        assert err <= 1e-4, f"{key}: relative gradient error {err:.1e}"


def test_training_fused_and_unfused_follows_the_same_trajectory_and_each_is_deterministic() -> None:
    runs: dict[str, list[dcnr.LocalExecutor]] = {"fused": [lm(True), lm(True)], "plain": [lm(False), lm(False)]}
    losses: dict[str, list[list[float]]] = {k: [[], []] for k in runs}
    for step in range(4):
        for kind, pair in runs.items():
            for i, ex in enumerate(pair):
                losses[kind][i].append(ex.train_step(batch(step), micro_batches=2)["ce_loss"])
    for kind, (a, b) in runs.items():  # bit-identical repeat runs
        assert losses[kind][0] == losses[kind][1], kind
        assert_equal_maps(a.parameters(), b.parameters())
    assert losses["fused"][0] == pytest.approx(losses["plain"][0], rel=1e-5)
    assert_close_maps(runs["fused"][0].parameters(), runs["plain"][0].parameters(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("saved_fused", [True, False], ids=["fused-to-unfused", "unfused-to-fused"])
def test_an_artifact_loads_whichever_way_it_was_trained(tmp_path: Path, saved_fused: bool) -> None:
    """Train one way, save; load the other way: the same parameters and optimizer state, and
    continued training gives the losses of the run that was not interrupted (fp32 tolerance)."""
    original = lm(saved_fused)
    for step in range(2):
        original.train_step(batch(step))
    path = tmp_path / "model.safetensors"
    original.save(path)
    keys = set(read_tensors(path.read_bytes()))
    assert "b0_head2.q.weight" in keys and "optim/b0_head2.q.weight/exp_avg" in keys
    assert not any(k.startswith(("b0_stack.", "optim/b0_stack.")) for k in keys), "names of the written graph only"

    other = lm(not saved_fused)
    other.load(path)
    assert other.step == 2
    assert_equal_maps(other.parameters(), original.parameters())
    for step in range(2, 5):
        got = other.train_step(batch(step))["ce_loss"]
        want = original.train_step(batch(step))["ce_loss"]
        assert got == pytest.approx(want, rel=1e-5), f"step {step}"
    assert_close_maps(other.parameters(), original.parameters(), rtol=1e-4, atol=1e-6)


def test_save_writes_the_network_artifact_that_from_artifact_reads(tmp_path: Path) -> None:
    ex = lm(True)
    ex.train_step(batch(0))
    path = tmp_path / "a.safetensors"
    ex.save(path)
    meta = artifact_metadata(path.read_bytes())
    assert meta["format"] == ARTIFACT_FORMAT and meta["step"] == "1"
    assert meta["yaml"] == ex.written.source  # the YAML as written, fuse key and all
    again = dcnr.LocalExecutor.from_artifact(path)
    assert len(again.vnodes) == len(ex.vnodes)
    assert_equal_maps(again.parameters(), ex.parameters())
    assert again.train_step(batch(1)) == ex.train_step(batch(1))


def test_vnode_state_round_trips_bit_exactly_after_adam_steps() -> None:
    ex = lm(True)
    for step in range(3):
        ex.train_step(batch(step))
    fresh = lm(True)
    for nid, v in ex.vnodes.items():
        state = v.state()
        fresh.vnodes[nid].load_state(state, ex.step)
        assert_equal_maps(fresh.vnodes[nid].state(), state)
        assert fresh.vnodes[nid].step == v.step == 3
    assert any(k.startswith("optim/") for v in ex.vnodes.values() for k in v.state())
    fresh.step = ex.step
    assert fresh.train_step(batch(3)) == ex.train_step(batch(3))
    assert_equal_maps(fresh.parameters(), ex.parameters())


def test_written_and_executed_state_are_inverse() -> None:
    ex = lm(True)
    ex.train_step(batch(0))
    states = {nid: v.state() for nid, v in ex.vnodes.items()}
    written = written_state(ex.plan, states)
    assert "b1_stack" not in written and written["b1_head1"]["param/v.weight"].shape == (8, 24)
    assert torch.equal(written["b1_head1"]["param/v.weight"], states["b1_stack"]["param/v.weight"][8:16])
    assert torch.equal(written["b1_head1"]["optim/v.weight/step"], states["b1_stack"]["optim/v.weight/step"])
    back = executed_state(ex.plan, written)
    assert back.keys() == ex.vnodes.keys()
    for nid in back:
        assert_equal_maps(back[nid], states[nid])


def test_optimizer_state_of_only_some_heads_is_refused() -> None:
    ex = lm(True)
    ex.train_step(batch(0))
    written = written_state(ex.plan, {nid: v.state() for nid, v in ex.vnodes.items()})
    del written["b0_head1"]["optim/k.weight/exp_avg"]
    want = "'exp_avg' exists for some of b0_head0.k.weight, b0_head1.k.weight, b0_head2.k.weight but not all"
    with pytest.raises(ValueError, match=re.escape(want)):
        executed_state(ex.plan, written)


def _topology1(fuse: bool) -> dcnr.LocalExecutor:
    doc = yaml.safe_load((ROOT / "examples" / "networks" / "topology1.yml").read_text(encoding="utf-8"))
    doc["precision"], doc["fuse"] = "float32", fuse
    return dcnr.LocalExecutor(dcnr.parse_network(yaml.safe_dump(doc)))


def test_topology1_one_step_parity() -> None:
    """SPEC §13 topology 1 in fp32: 139 VNodes unfused, 85 fused; one step (batch 2 × 128
    tokens) gives the same loss and the same gradient of every written parameter."""
    plain = _topology1(False)
    fused = _topology1(True)
    assert (len(plain.vnodes), len(fused.vnodes)) == (139, 85)
    seqs = torch.randint(0, 10_000, (2, 129), generator=torch.Generator().manual_seed(1))
    data = {"tokens": seqs[:, :-1], "targets": seqs[:, 1:]}
    want = plain.train_step(data, update=False)["ce_loss"]
    ref = plain.gradients()
    del plain
    got = fused.train_step(data, update=False)["ce_loss"]
    assert got == pytest.approx(want, rel=1e-5)
    grads = fused.gradients()
    assert grads.keys() == ref.keys()
    for key in ref:
        err = float((grads[key] - ref[key]).norm() / ref[key].norm().clamp_min(1e-30))
        assert err <= 1e-4, f"{key}: relative gradient error {err:.1e}"
