"""The SPEC §13 reference transformer, run by VNodes, against a monolithic PyTorch model.

The reference below is written the way a PyTorch user would write the same model
(fused q/k/v projection, explicit masked softmax attention, its own RoPE, tied LM
head) and shares no code with `dcnr.nodes`. Parameters are copied in by their
checkpoint names; loss, logits, every gradient and Adam trajectories must agree, with the
SPEC §6 fusions (the default) and without them (`fuse: false`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import dcnr
from dcnr.spec.transformer import transformer_lm


@dataclass(frozen=True)
class Dims:
    blocks: int = 2
    heads: int = 2
    head_dim: int = 8
    dim: int = 16
    seq_len: int = 8
    vocab: int = 50
    ffn: int = 32
    hidden: int = 64  # head up-projection; swiglu halves it


DIMS = Dims()
LR = 1e-3



def rope(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotate-half RoPE on x (..., S, d): pairs (i, i + d/2) turn by pos · theta^(-2i/d)."""
    seq, d = x.shape[-2], x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angles = torch.outer(torch.arange(seq, dtype=torch.float64), freqs)  # (S, d/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(x.dtype)  # (S, d)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Block(nn.Module):
    def __init__(self, c: Dims) -> None:
        super().__init__()
        self.c = c
        inner = c.heads * c.head_dim
        self.ln1 = nn.LayerNorm(c.dim)
        self.qkv = nn.Linear(c.dim, 3 * inner, bias=False)  # rows: [q heads | k heads | v heads]
        self.proj = nn.Linear(inner, c.dim)
        self.ln2 = nn.LayerNorm(c.dim)
        self.fc1 = nn.Linear(c.dim, c.ffn)
        self.fc2 = nn.Linear(c.ffn, c.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        h, hd = self.c.heads, self.c.head_dim
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, h, hd).permute(2, 0, 3, 1, 4)  # each (B, H, S, hd)
        q, k = rope(q), rope(k)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hd)  # (B, H, S, S)
        future = torch.ones(s, s, dtype=torch.bool).triu(1)
        att = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, h * hd)  # (B, S, H·hd), heads in order
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ReferenceLM(nn.Module):
    def __init__(self, c: Dims) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.vocab, c.dim)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.blocks))
        self.ln_f = nn.LayerNorm(c.dim)
        self.up = nn.Linear(c.dim, c.hidden)
        self.down = nn.Linear(c.hidden // 2, c.dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # (B, S, D)
        for block in self.blocks:
            x = block(x)
        value, gate = self.up(self.ln_f(x)).chunk(2, dim=-1)  # (B, S, hidden/2) each
        x = self.down(value * F.silu(gate))
        return x @ self.embed.weight.t()  # (B, S, V): tied, no bias

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def checkpoint_views(model: ReferenceLM, c: Dims) -> dict[str, tuple[torch.Tensor, slice]]:
    """Checkpoint name -> (module parameter, row slice of it) holding that tensor."""
    whole = slice(None)
    out = {"embedder.weight": (model.embed.weight, whole)}
    for i, blk in enumerate(model.blocks):
        p = f"b{i}_"
        for name, mod in (("ln1", blk.ln1), ("proj", blk.proj), ("ln2", blk.ln2), ("fc1", blk.fc1), ("fc2", blk.fc2)):
            out[f"{p}{name}.weight"] = (mod.weight, whole)
            out[f"{p}{name}.bias"] = (mod.bias, whole)
        for which, letter in enumerate("qkv"):
            for h in range(c.heads):
                start = (which * c.heads + h) * c.head_dim
                out[f"{p}head{h}.{letter}.weight"] = (blk.qkv.weight, slice(start, start + c.head_dim))
    for name, mod in (("ln_f", model.ln_f), ("head_up", model.up), ("head_down", model.down)):
        out[f"{name}.weight"] = (mod.weight, whole)
        out[f"{name}.bias"] = (mod.bias, whole)
    return out


def make_executor(seed: int = 0, fuse: bool = True) -> dcnr.LocalExecutor:
    c = DIMS
    doc = transformer_lm("parity", blocks=c.blocks, heads=c.heads, head_dim=c.head_dim, dim=c.dim,
                         seq_len=c.seq_len, vocab_size=c.vocab, ffn_dim=c.ffn, head_hidden=c.hidden,
                         dropout=0.0, precision="float32", lr=LR, seed=seed)
    doc["fuse"] = fuse
    return dcnr.LocalExecutor(dcnr.parse_network(yaml.safe_dump(doc)))


def mirror(ex: dcnr.LocalExecutor) -> tuple[ReferenceLM, dict[str, tuple[torch.Tensor, slice]]]:
    """A reference model holding exactly the executor's parameters."""
    torch.manual_seed(1234)  # the reference's own init is overwritten below
    model = ReferenceLM(DIMS)
    views = checkpoint_views(model, DIMS)
    params = ex.parameters()
    assert set(views) == set(params), "every checkpoint tensor must be mapped exactly once"
    with torch.no_grad():
        for key, value in params.items():
            tensor, rows = views[key]
            assert tensor[rows].shape == value.shape, key
            tensor[rows] = value
    return model, views


def batch(n: int = 4, seed: int = 7) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    seqs = torch.randint(0, DIMS.vocab, (n, DIMS.seq_len + 1), generator=gen)
    return {"tokens": seqs[:, :-1], "targets": seqs[:, 1:]}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))


@pytest.fixture(scope="module", params=[True, False], ids=["fused", "unfused"])
def executor(request: pytest.FixtureRequest) -> dcnr.LocalExecutor:
    return make_executor(fuse=request.param)


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_fusion_setting_decides_the_executed_graph(fuse: bool) -> None:
    """The comparisons below cover both graphs: 2 blocks' heads and the LM head fused, or none."""
    types = [n.type for n in make_executor(fuse=fuse).spec.nodes.values()]
    assert (types.count("attention"), types.count("attention_head")) == ((2, 0) if fuse else (0, 4))
    assert ("tied_lm_head_ce" in types) == fuse


def test_forward_logits_match_reference(executor: dcnr.LocalExecutor) -> None:
    """Inference logits of the VNode graph equal the monolithic model's logits."""
    model, _ = mirror(executor)
    data = batch()
    got = executor.forward({"tokens": data["tokens"]})["logits"]
    with torch.no_grad():
        want = model(data["tokens"])
    assert got.shape == (4, DIMS.seq_len, DIMS.vocab)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("micro_batches", [1, 2, 4])
def test_loss_and_every_gradient_match_autograd(micro_batches: int, fuse: bool) -> None:
    """Loss and the gradient of every parameter (tied embedding included) match autograd."""
    ex = make_executor(fuse=fuse)
    model, views = mirror(ex)
    data = batch()
    loss = ex.train_step(data, micro_batches=micro_batches, update=False)["ce_loss"]
    want_loss = model.loss(data["tokens"], data["targets"])
    want_loss.backward()
    assert loss == pytest.approx(want_loss.item(), rel=1e-5)
    grads = ex.gradients()
    assert set(grads) == set(views)
    for key, got in grads.items():
        tensor, rows = views[key]
        want = tensor.grad[rows]
        assert float(want.norm()) > 0, f"{key}: reference gradient is zero, nothing is being compared"
        assert rel_err(got, want) <= 1e-4, f"{key}: relative gradient error {rel_err(got, want):.2e}"


def test_parameters_untouched_without_update() -> None:
    """`train_step(update=False)` computes gradients but never moves a parameter."""
    ex = make_executor()
    before = ex.parameters()
    ex.train_step(batch(), micro_batches=2, update=False)
    for key, value in ex.parameters().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_adam_trajectory_matches_torch_adam(fuse: bool) -> None:
    """Several Adam steps (per-VNode optimizers) follow torch.optim.Adam on the whole model."""
    ex = make_executor(seed=3, fuse=fuse)
    model, views = mirror(ex)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for step in range(4):
        data = batch(seed=100 + step)
        loss = ex.train_step(data, micro_batches=2, update=True)["ce_loss"]
        opt.zero_grad()
        want = model.loss(data["tokens"], data["targets"])
        want.backward()
        opt.step()
        assert loss == pytest.approx(want.item(), rel=1e-5), f"step {step}"
    start = make_executor(seed=3, fuse=fuse).parameters()
    for key, got in ex.parameters().items():
        tensor, rows = views[key]
        want = tensor.detach()[rows]
        moved = float((want - start[key]).abs().max())
        assert moved > LR, f"{key}: parameter barely moved ({moved:.1e}); the comparison would be vacuous"
        torch.testing.assert_close(got, want, rtol=1e-4, atol=LR * 1e-2, msg=lambda m, k=key: f"{k}: {m}")
    data = batch(seed=99)
    with torch.no_grad():
        want_logits = model(data["tokens"])
    torch.testing.assert_close(ex.forward({"tokens": data["tokens"]})["logits"], want_logits, rtol=1e-3, atol=1e-4)
