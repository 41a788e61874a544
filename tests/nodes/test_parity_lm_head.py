"""Parity of `tied_lm_head_ce` (alias `fusedlmheadce`) with cross-entropy of x Wᵀ in plain PyTorch."""

from __future__ import annotations

import pytest
import torch

from dcnr import LocalExecutor

VOCAB, DIM, SEQ, BATCH = 13, 6, 5, 4


def cross_entropy(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Reference mean token cross-entropy, log-softmax written out."""
    flat = logits.reshape(-1, logits.shape[-1])
    shifted = flat - flat.max(-1, keepdim=True).values.detach()
    logp = shifted - torch.log(torch.exp(shifted).sum(-1, keepdim=True))
    return -logp[torch.arange(flat.shape[0]), ids.reshape(-1)].mean()


def lm_network(kit, head_type: str, chunk_tokens: int | None, fused: bool = True):
    """embedder(shared tok) -> linear -> tied head (fused CE, or tied linear + ce_logits cost)."""
    emb = kit.node("emb", "embedder", vocab_size=VOCAB, dim=DIM, seq_len=SEQ, position_encoding="learned",
                   shared_weight_alias="tok")
    mid = kit.node("mid", "linear", in_dim=DIM, out_dim=DIM)
    if fused:
        cfg = {"in_dim": DIM, "out_dim": VOCAB, "tie_weight_alias": "tok"}
        if chunk_tokens is not None:
            cfg["chunk_tokens"] = chunk_tokens
        return kit.network(
            [emb, mid, kit.node("lm", head_type, **cfg)],
            [kit.edge("emb", "mid"), kit.edge("mid", "lm")],
            [kit.bind("tokens", "emb"), kit.bind("targets", "lm", 1)],
            outputs=[kit.bind("loss", "lm")], costs=[kit.bind("loss", "lm")],
        )
    return kit.network(
        [emb, mid, kit.node("lm", "linear", in_dim=DIM, out_dim=VOCAB, bias=False, tie_weight_alias="tok"),
         kit.node("ce", "cost", cost_function="ce_logits", vocab_size=VOCAB)],
        [kit.edge("emb", "mid"), kit.edge("mid", "lm"), kit.edge("lm", "ce")],
        [kit.bind("tokens", "emb"), kit.bind("targets", "ce", 1)],
        outputs=[kit.bind("loss", "ce")], costs=[kit.bind("loss", "ce")],
    )


def data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen),
            torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen))


@pytest.mark.parametrize("head_type", ["tied_lm_head_ce", "fusedlmheadce"])
@pytest.mark.parametrize("chunk_tokens", [1, 3, None], ids=["chunk1", "chunk3", "default"])
def test_tied_lm_head_ce(kit, micro_batches: int, head_type: str, chunk_tokens: int | None) -> None:
    """Loss = CE(x Wᵀ, targets) with W the embedding; the embedding gradient gets both the lookup and
    the head contributions; chunking (incl. a ragged last chunk) changes nothing."""
    spec = lm_network(kit, head_type, chunk_tokens)
    ex = LocalExecutor(spec, seed=0)
    params = kit.randomize(ex, seed=21, scale=1.0)
    assert set(params) == {"emb.weight", "emb.position", "mid.weight", "mid.bias"}  # no copy of the tied weight
    tokens, targets = data(22)

    leaves = kit.make_leaves(params)
    w = leaves["emb.weight"]
    x = w[tokens] + leaves["emb.position"]
    x = x @ leaves["mid.weight"].t() + leaves["mid.bias"]
    loss_ref = cross_entropy(x @ w.t(), targets)
    loss_ref.backward()

    value = ex.forward({"tokens": tokens, "targets": targets})["loss"]
    assert value.dtype == torch.float32 and value.dim() == 0
    kit.check_close(value, loss_ref, "evaluation loss")
    loss = ex.train_step({"tokens": tokens, "targets": targets}, micro_batches=micro_batches, update=False)["loss"]
    kit.check_loss(loss, loss_ref)
    kit.check_grads(ex, leaves, head_type)


@pytest.mark.parametrize("chunk_tokens", [3, 64])
def test_fused_head_equals_tied_linear_and_ce_logits(kit, micro_batches: int, chunk_tokens: int) -> None:
    """The fused head and a tied bias-free linear feeding a ce_logits cost agree on loss and gradients."""
    fused = LocalExecutor(lm_network(kit, "tied_lm_head_ce", chunk_tokens), seed=0)
    plain = LocalExecutor(lm_network(kit, "tied_lm_head_ce", None, fused=False), seed=0)
    params = kit.randomize(fused, seed=23, scale=1.0)
    plain.load_parameters(params)
    tokens, targets = data(24)
    feed = {"tokens": tokens, "targets": targets}
    kit.check_loss(fused.train_step(feed, micro_batches=micro_batches, update=False)["loss"],
                   plain.train_step(feed, micro_batches=micro_batches, update=False)["loss"])
    gf, gp = fused.gradients(), plain.gradients()
    assert set(gf) == set(gp)
    for name in gf:
        kit.check_close(gf[name], gp[name], f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_both_gradient_paths_match_autograd(dtype: torch.dtype) -> None:
    """fp32 weights: forward computes the gradients and backward scales them by the seed; lower
    precision: backward recomputes the chunks. Both give loss and gradients of a float64 autograd
    reference for a seed of 3 (bf16 within bf16 rounding)."""
    from dcnr.nodes.base import Context
    from dcnr.nodes.tied_lm_head_ce import TiedLMHeadCE

    gen = torch.Generator().manual_seed(31)
    x, w = torch.randn(2, 7, DIM, generator=gen), torch.randn(VOCAB, DIM, generator=gen)
    ids = torch.randint(0, VOCAB, (2, 7), generator=gen)
    node = TiedLMHeadCE("lm", TiedLMHeadCE.Config(in_dim=DIM, out_dim=VOCAB, tie_weight_alias="tok", chunk_tokens=4))
    ctx = Context({"weight": w.to(dtype)}, True, (0, "lm", 0, 0))
    (loss,) = node.forward(ctx, [x.to(dtype), ids])
    assert (ctx.saved[3] is not None) == (dtype == torch.float32)  # which path runs
    gx, _ = node.backward(ctx, [torch.tensor(3.0)])
    assert gx is not None

    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    ref = torch.nn.functional.cross_entropy((xr @ wr.t()).reshape(-1, VOCAB), ids.reshape(-1))
    (3.0 * ref).backward()
    assert xr.grad is not None and wr.grad is not None
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 3e-2, "atol": 3e-2}
    torch.testing.assert_close(loss.double(), ref.detach(), **tol)
    torch.testing.assert_close(gx.double(), xr.grad, **tol)
    torch.testing.assert_close(ctx.param_grads["weight"].double(), wr.grad, **tol)
