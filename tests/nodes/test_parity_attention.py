"""Parity of `attention_head` / `attention` (and their aliases) with hand-written attention.

The reference computes softmax(q kᵀ/√d + causal mask) v explicitly and applies its own
rotate-half RoPE (pairs i and i + d/2, positions 0..seq-1, θ = 10000 unless configured).
"""

from __future__ import annotations

import math

import pytest
import torch

from dcnr import LocalExecutor

BATCH, SEQ, DIM, HEAD_DIM, HEADS = 4, 5, 8, 4, 2


def ref_rope(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+d/2}) at position p by the angle p·θ^(-2i/d)."""
    seq, d = x.shape[-2], x.shape[-1]
    half = d // 2
    out = torch.empty_like(x)
    for i in range(half):
        freq = theta ** (-2.0 * i / d)
        angle = torch.tensor([p * freq for p in range(seq)], dtype=torch.float64).to(x.dtype)  # (S,)
        c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        a, b = x[..., i : i + 1], x[..., half + i : half + i + 1]
        out[..., i : i + 1] = a * c - b * s
        out[..., half + i : half + i + 1] = b * c + a * s
    return out


def ref_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q kᵀ / √d + mask) v, with the softmax written out."""
    d, seq = q.shape[-1], q.shape[-2]
    scores = (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1) / math.sqrt(d)  # (.., S, S)
    if causal:
        future = torch.tensor([[j > i for j in range(seq)] for i in range(seq)])
        scores = scores.masked_fill(future, float("-inf"))
    e = torch.exp(scores - scores.max(-1, keepdim=True).values.detach())
    w = e / e.sum(-1, keepdim=True)
    return w @ v


def ref_head(causal: bool, rope: bool, theta: float = 10000.0):
    def f(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
        (x,) = xs
        q, k, v = x @ p["q.weight"].t(), x @ p["k.weight"].t(), x @ p["v.weight"].t()
        if rope:
            q, k = ref_rope(q, theta), ref_rope(k, theta)
        return ref_attend(q, k, v, causal)

    return f


def ref_multi(heads: int, head_dim: int, causal: bool, rope: bool, projection: bool):
    def f(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
        (x,) = xs
        outs = []
        for h in range(heads):
            rows = slice(h * head_dim, (h + 1) * head_dim)
            w = {name: p[name][rows] for name in ("q.weight", "k.weight", "v.weight")}
            outs.append(ref_head(causal, rope)([x], w))
        y = torch.cat(outs, dim=-1)
        return y @ p["o.weight"].t() if projection else y

    return f


def test_reference_rope_is_rotate_half() -> None:
    """The test's own RoPE: position 0 is identity, norms are kept, and pair (0, d/2) rotates by p radians."""
    x = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = ref_rope(x)
    torch.testing.assert_close(y[:, 0], x[:, 0])
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    p = 2
    c, s = math.cos(p), math.sin(p)  # i = 0: frequency θ^0 = 1
    torch.testing.assert_close(y[0, p, 0], x[0, p, 0] * c - x[0, p, 2] * s)
    torch.testing.assert_close(y[0, p, 2], x[0, p, 2] * c + x[0, p, 0] * s)


@pytest.mark.parametrize("ntype", ["attention_head", "singleheadattention"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("rope", [True, False], ids=["rope", "norope"])
def test_attention_head(kit, micro_batches: int, ntype: str, causal: bool, rope: bool) -> None:
    """attention_head: values, input grads and q/k/v weight grads match explicit attention."""
    cfg = {"head_dim": HEAD_DIM, "input_dim": DIM, "seq_len": SEQ, "causal": causal,
           "position_encoding": "rope" if rope else "none"}
    kit.run_parity(ntype, cfg, [(SEQ, DIM)], ref_head(causal, rope), micro_batches=micro_batches)


def test_attention_head_rope_theta_and_short_sequence(kit) -> None:
    """rope_theta is honoured, and a sequence shorter than seq_len uses positions 0..S-1."""
    cfg = {"head_dim": 6, "input_dim": DIM, "seq_len": 8, "causal": True, "position_encoding": "rope",
           "rope_theta": 50.0}
    kit.run_parity("attention_head", cfg, [(SEQ, DIM)], ref_head(True, True, theta=50.0))


@pytest.mark.parametrize("ntype", ["attention", "multiheadattention"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("rope", [True, False], ids=["rope", "norope"])
@pytest.mark.parametrize("projection", [True, False], ids=["proj", "noproj"])
def test_attention(kit, micro_batches: int, ntype: str, causal: bool, rope: bool, projection: bool) -> None:
    """attention: all heads (+ optional output projection) match per-head explicit attention."""
    cfg = {"num_heads": HEADS, "head_dim": HEAD_DIM, "dim": DIM, "seq_len": SEQ, "causal": causal,
           "position_encoding": "rope" if rope else "none", "output_projection": projection}
    run = kit.run_parity(ntype, cfg, [(SEQ, DIM)], ref_multi(HEADS, HEAD_DIM, causal, rope, projection),
                         micro_batches=micro_batches)
    assert ("n.o.weight" in run.params) == projection


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("rope", [True, False], ids=["rope", "norope"])
@pytest.mark.parametrize("projection", [True, False], ids=["proj", "noproj"])
def test_attention_equals_heads_and_stack(kit, micro_batches: int, causal: bool, rope: bool,
                                          projection: bool) -> None:
    """attention(H) == broadcast -> H attention_heads -> stack (-> bias-free linear), given the
    corresponding weights (rows h·hd:(h+1)·hd of q/k/v): same outputs, loss and gradients."""
    heads = 3
    pe = "rope" if rope else "none"
    sources, src_edges, src_inputs, _ = kit.source_nodes([(SEQ, DIM)], BATCH)
    common = {"causal": causal, "position_encoding": pe, "seq_len": SEQ}
    out_dim = DIM if projection else heads * HEAD_DIM

    fused = kit.network(
        [*sources, kit.node("attn", "attention", num_heads=heads, head_dim=HEAD_DIM, dim=DIM,
                            output_projection=projection, **common),
         kit.node("loss", "cost", cost_function="mse")],
        [*src_edges, kit.edge("src0", "attn"), kit.edge("attn", "loss")],
        [*src_inputs, kit.bind("target", "loss", 1)],
        outputs=[kit.bind("y", "attn")], costs=[kit.bind("loss", "loss")],
    )
    split_nodes = [*sources, kit.node("bc", "broadcast", num_outputs=heads)]
    split_edges = [*src_edges, kit.edge("src0", "bc")]
    for h in range(heads):
        split_nodes.append(kit.node(f"head{h}", "attention_head", head_dim=HEAD_DIM, input_dim=DIM, **common))
        split_edges += [kit.edge("bc", f"head{h}", h, 0), kit.edge(f"head{h}", "stack", 0, h)]
    split_nodes.append(kit.node("stack", "stack", axis=-1))
    last = "stack"
    if projection:
        split_nodes.append(kit.node("proj", "linear", in_dim=heads * HEAD_DIM, out_dim=DIM, bias=False))
        split_edges.append(kit.edge("stack", "proj"))
        last = "proj"
    split_nodes.append(kit.node("loss", "cost", cost_function="mse"))
    split_edges.append(kit.edge(last, "loss"))
    split = kit.network(split_nodes, split_edges, [*src_inputs, kit.bind("target", "loss", 1)],
                        outputs=[kit.bind("y", last)], costs=[kit.bind("loss", "loss")])

    ex_f, ex_s = LocalExecutor(fused, seed=0), LocalExecutor(split, seed=0)
    pf = kit.randomize(ex_f, seed=11, sources=["src0"])
    ps = {"src0.weight": pf["src0.weight"]}
    for h in range(heads):
        rows = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        for w in ("q", "k", "v"):
            ps[f"head{h}.{w}.weight"] = pf[f"attn.{w}.weight"][rows]
    if projection:
        ps["proj.weight"] = pf["attn.o.weight"]
    ex_s.load_parameters(ps)

    ids = kit.source_ids([(SEQ, DIM)], BATCH)
    target = torch.randn(BATCH, SEQ, out_dim, generator=torch.Generator().manual_seed(12))
    kit.check_close(ex_f.forward(ids)["y"], ex_s.forward(ids)["y"], "fused vs split forward")
    feed = {**ids, "target": target}
    loss_f = ex_f.train_step(feed, micro_batches=micro_batches, update=False)["loss"]
    loss_s = ex_s.train_step(feed, micro_batches=micro_batches, update=False)["loss"]
    kit.check_loss(loss_f, loss_s)
    gf, gs = ex_f.gradients(), ex_s.gradients()
    kit.check_close(gf["src0.weight"], gs["src0.weight"], "input gradient")
    for h in range(heads):
        rows = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        for w in ("q", "k", "v"):
            kit.check_close(gf[f"attn.{w}.weight"][rows], gs[f"head{h}.{w}.weight"], f"head {h} {w}")
    if projection:
        kit.check_close(gf["attn.o.weight"], gs["proj.weight"], "output projection")
