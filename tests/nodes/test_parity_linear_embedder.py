"""Parity of `linear` (alias `dense`) and `embedder`, and of a weight-tied linear LM head."""

from __future__ import annotations

import pytest
import torch

from dcnr import LocalExecutor


def ref_linear(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
    (x,) = xs
    y = (x.unsqueeze(-2) * p["weight"]).sum(-1)  # y_o = Σ_i x_i W_oi
    return y + p["bias"] if "bias" in p else y


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Reference log-softmax over the last axis, written out (max-shifted)."""
    shifted = logits - logits.max(-1, keepdim=True).values.detach()
    return shifted - torch.log(torch.exp(shifted).sum(-1, keepdim=True))


def layer_norm(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Reference layer norm over the last axis (biased variance)."""
    mean = h.mean(-1, keepdim=True)
    return (h - mean) / torch.sqrt(((h - mean) ** 2).mean(-1, keepdim=True) + eps) * weight + bias


def cross_entropy(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Reference mean token cross-entropy of raw logits [.., V] against ids [..]."""
    logp = log_softmax(logits).reshape(-1, logits.shape[-1])
    return -logp[torch.arange(logp.shape[0]), ids.reshape(-1)].mean()


@pytest.mark.parametrize("ntype", ["linear", "dense"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 6), (3, 2, 4)], ids=str)
def test_linear(kit, micro_batches: int, ntype: str, bias: bool, shape: tuple[int, ...]) -> None:
    """linear/dense: y = x Wᵀ (+ b); values, input grads, weight and bias grads."""
    cfg = {"in_dim": shape[-1], "out_dim": 3, "bias": bias}
    run = kit.run_parity(ntype, cfg, [shape], ref_linear, micro_batches=micro_batches)
    assert ("n.bias" in run.params) == bias
    assert tuple(run.params["n.weight"].shape) == (3, shape[-1])  # [out, in], PyTorch layout


def ref_embedder(vocab: int, seq: int, learned: bool):
    def f(ids: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        onehot = (ids.unsqueeze(-1) == torch.arange(vocab)).float()  # (B, S, V)
        y = onehot @ p["weight"]
        return y + p["position"][: ids.shape[1]] if learned else y

    return f


@pytest.mark.parametrize("position", ["learned", "rope", "none"])
@pytest.mark.parametrize("seq", [6, 4], ids=["full", "shorter"])
def test_embedder(kit, micro_batches: int, position: str, seq: int) -> None:
    """embedder: E[ids] (+ P[0:seq] if learned); weight grads accumulate repeated ids, position
    grads land on the first `seq` rows only."""
    vocab, dim, seq_len, batch = 7, 5, 6, 4
    spec = kit.network(
        [kit.node("emb", "embedder", vocab_size=vocab, dim=dim, seq_len=seq_len, position_encoding=position),
         kit.node("loss", "cost", cost_function="mse")],
        [kit.edge("emb", "loss")],
        [kit.bind("ids", "emb"), kit.bind("target", "loss", 1)],
        outputs=[kit.bind("y", "emb")], costs=[kit.bind("loss", "loss")],
    )
    ex = LocalExecutor(spec, seed=0)
    params = kit.randomize(ex, seed=3, scale=1.0)
    assert set(params) == ({"emb.weight", "emb.position"} if position == "learned" else {"emb.weight"})
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    ids[0, :3] = 2  # repeated ids must accumulate
    target = torch.randn(batch, seq, dim, generator=gen)

    leaves = kit.make_leaves(params)
    y_ref = ref_embedder(vocab, seq, position == "learned")(ids, kit.local(leaves, "emb"))
    loss_ref = kit.mse(y_ref, target)
    loss_ref.backward()

    kit.check_close(ex.forward({"ids": ids})["y"], y_ref, "embedder forward")
    loss = ex.train_step({"ids": ids, "target": target}, micro_batches=micro_batches, update=False)["loss"]
    kit.check_loss(loss, loss_ref)
    kit.check_grads(ex, leaves, "embedder")
    if position == "learned" and seq < seq_len:
        assert not ex.gradients()["emb.position"][seq:].any()


@pytest.mark.parametrize("bias", [True, False])
def test_tied_linear_ce_logits(kit, micro_batches: int, bias: bool) -> None:
    """embedder(shared_weight_alias) -> layernorm -> linear(tie_weight_alias) -> ce_logits: the tied
    weight is stored once and its gradient is the sum of the embedding and the head contributions."""
    vocab, dim, seq, batch = 11, 6, 5, 4
    spec = kit.network(
        [kit.node("emb", "embedder", vocab_size=vocab, dim=dim, seq_len=seq, position_encoding="learned",
                  shared_weight_alias="tok"),
         kit.node("ln", "layernorm", dim=dim),
         kit.node("head", "linear", in_dim=dim, out_dim=vocab, bias=bias, tie_weight_alias="tok"),
         kit.node("loss", "cost", cost_function="ce_logits", vocab_size=vocab)],
        [kit.edge("emb", "ln"), kit.edge("ln", "head"), kit.edge("head", "loss")],
        [kit.bind("tokens", "emb"), kit.bind("targets", "loss", 1)],
        outputs=[kit.bind("logits", "head")], costs=[kit.bind("loss", "loss")],
    )
    ex = LocalExecutor(spec, seed=0)
    params = kit.randomize(ex, seed=5, scale=1.0)
    want = {"emb.weight", "emb.position", "ln.weight", "ln.bias"} | ({"head.bias"} if bias else set())
    assert set(params) == want  # the tied weight is stored once, at the publisher
    gen = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, vocab, (batch, seq), generator=gen)
    targets = torch.randint(0, vocab, (batch, seq), generator=gen)

    leaves = kit.make_leaves(params)
    w = leaves["emb.weight"]
    h = layer_norm(w[tokens] + leaves["emb.position"], leaves["ln.weight"], leaves["ln.bias"])
    logits = h @ w.t() + (leaves["head.bias"] if bias else 0.0)
    loss_ref = cross_entropy(logits, targets)
    loss_ref.backward()

    kit.check_close(ex.forward({"tokens": tokens})["logits"], logits, "tied head logits")
    loss = ex.train_step({"tokens": tokens, "targets": targets}, micro_batches=micro_batches, update=False)["loss"]
    kit.check_loss(loss, loss_ref)
    kit.check_grads(ex, leaves, "tied linear")

    # both uses contribute: the gradient differs from what the embedding alone receives
    w_only_emb = leaves["emb.weight"].detach().clone().requires_grad_()
    h2 = layer_norm(w_only_emb[tokens] + leaves["emb.position"].detach(), leaves["ln.weight"].detach(),
                    leaves["ln.bias"].detach())
    cross_entropy(h2 @ w.detach().t() + (leaves["head.bias"].detach() if bias else 0.0), targets).backward()
    assert w_only_emb.grad is not None
    assert float((ex.gradients()["emb.weight"] - w_only_emb.grad).abs().max()) > 1e-3
