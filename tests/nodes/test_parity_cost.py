"""Parity of the `cost` node: `mse`, `ce` (probabilities) and `ce_logits`, and `cost_precision`."""

from __future__ import annotations

import pytest
import torch

from dcnr import LocalExecutor

BATCH, VOCAB = 4, 7


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    shifted = logits - logits.max(-1, keepdim=True).values.detach()
    return shifted - torch.log(torch.exp(shifted).sum(-1, keepdim=True))


def ref_cost(function: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over elements (mse) or tokens (ce, ce_logits), written out."""
    if function == "mse":
        return ((pred - target) ** 2).sum() / pred.numel()
    flat = pred.reshape(-1, pred.shape[-1])
    ids = target.reshape(-1)
    logp = torch.log(flat) if function == "ce" else log_softmax(flat)
    return -logp[torch.arange(flat.shape[0]), ids].sum() / flat.shape[0]


def cost_network(kit, function: str, shape: tuple[int, ...], **config):
    """source (the prediction, a learned tensor) -> cost; the target is a network input."""
    sources, edges, inputs, tails = kit.source_nodes([shape], BATCH)
    return kit.network(
        [*sources, kit.node("loss", "cost", cost_function=function, **config)],
        [*edges, kit.edge(tails[0], "loss")],
        [*inputs, kit.bind("target", "loss", 1)],
        outputs=[kit.bind("loss", "loss")], costs=[kit.bind("loss", "loss")],
    )


def make_target(function: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if function == "mse":
        return torch.randn(BATCH, *shape, generator=gen)
    return torch.randint(0, shape[-1], (BATCH, *shape[:-1]), generator=gen)


def prediction(function: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Source weight values: probabilities (rows summing to 1) for `ce`, raw values otherwise."""
    raw = torch.randn(BATCH * shape[0], *shape[1:], generator=gen) * 2.0
    if function == "ce":
        e = torch.exp(raw - raw.max(-1, keepdim=True).values)
        raw = e / e.sum(-1, keepdim=True)
    return raw.reshape(BATCH * shape[0], -1)


@pytest.mark.parametrize("function", ["mse", "ce", "ce_logits"])
@pytest.mark.parametrize("shape", [(5, VOCAB), (2, 3, VOCAB)], ids=["rank2", "rank3"])
def test_cost_parity(kit, micro_batches: int, function: str, shape: tuple[int, ...]) -> None:
    """Loss value (training and evaluation) and the prediction gradient match the reference."""
    spec = cost_network(kit, function, shape)
    ex = LocalExecutor(spec, seed=0)
    gen = torch.Generator().manual_seed(51)
    params = {"src0.weight": prediction(function, shape, gen)}
    ex.load_parameters(params)
    ids = kit.source_ids([shape], BATCH)
    target = make_target(function, shape, gen)

    leaves = kit.make_leaves(params)
    loss_ref = ref_cost(function, leaves["src0.weight"].view(BATCH, *shape), target)
    loss_ref.backward()

    value = ex.forward({**ids, "target": target})["loss"]
    assert value.dim() == 0 and value.dtype == torch.float32
    kit.check_close(value, loss_ref, f"{function} evaluation loss")
    loss = ex.train_step({**ids, "target": target}, micro_batches=micro_batches, update=False)["loss"]
    kit.check_loss(loss, loss_ref, f"{function} training loss")
    kit.check_grads(ex, leaves, function)


@pytest.mark.parametrize("function", ["ce", "ce_logits"])
def test_cross_entropy_after_linear(kit, micro_batches: int, function: str) -> None:
    """A linear feeding the cost gets the right weight, bias and input gradients (for `ce` the linear
    maps simplex inputs to probabilities); the `vocab_size` and `in_dim` keys are accepted."""
    seq, dim = 5, 4
    sources, edges, inputs, _ = kit.source_nodes([(seq, dim)], BATCH)
    spec = kit.network(
        [*sources, kit.node("head", "linear", in_dim=dim, out_dim=VOCAB),
         kit.node("loss", "cost", cost_function=function, vocab_size=VOCAB, in_dim=VOCAB)],
        [*edges, kit.edge("src0", "head"), kit.edge("head", "loss")],
        [*inputs, kit.bind("target", "loss", 1)],
        costs=[kit.bind("loss", "loss")],
    )
    ex = LocalExecutor(spec, seed=0)
    gen = torch.Generator().manual_seed(52)
    if function == "ce":
        # inputs on the simplex and a column-stochastic weight give probabilities: p = x Wᵀ + 0
        x = torch.rand(BATCH * seq, dim, generator=gen) + 0.1
        x = x / x.sum(-1, keepdim=True)
        w = torch.rand(VOCAB, dim, generator=gen) + 0.1
        params = {"src0.weight": x, "head.weight": w / w.sum(0, keepdim=True), "head.bias": torch.zeros(VOCAB)}
    else:
        params = {"src0.weight": torch.randn(BATCH * seq, dim, generator=gen),
                  "head.weight": torch.randn(VOCAB, dim, generator=gen), "head.bias": torch.randn(VOCAB, generator=gen)}
    ex.load_parameters(params)
    ids = kit.source_ids([(seq, dim)], BATCH)
    target = torch.randint(0, VOCAB, (BATCH, seq), generator=gen)

    leaves = kit.make_leaves(params)
    pred = leaves["src0.weight"].view(BATCH, seq, dim) @ leaves["head.weight"].t() + leaves["head.bias"]
    if function == "ce":
        torch.testing.assert_close(pred.detach().sum(-1), torch.ones(BATCH, seq))
    loss_ref = ref_cost(function, pred, target)
    loss_ref.backward()
    loss = ex.train_step({**ids, "target": target}, micro_batches=micro_batches, update=False)["loss"]
    kit.check_loss(loss, loss_ref)
    kit.check_grads(ex, leaves, function)


@pytest.mark.parametrize("function", ["mse", "ce_logits"])
@pytest.mark.parametrize("where", ["network", "cost-node"], ids=["fp16-network", "fp16-cost-only"])
def test_cost_precision_float32_with_fp16_activations(kit, function: str, where: str) -> None:
    """cost_precision: float32 on fp16 activations returns a float32 loss, computed in fp32 from the
    fp16 values (so it matches an fp32 reference to fp32 tolerance); gradients are unscaled correctly."""
    shape = (5, VOCAB)
    top = {"precision": "fp16"} if where == "network" else {}
    extra = {} if where == "network" else {"activation_precision": "fp16"}
    sources, edges, inputs, tails = kit.source_nodes([shape], BATCH)
    spec = kit.network(
        [*sources, kit.node("loss", "cost", cost_function=function, cost_precision="float32", **extra)],
        [*edges, kit.edge(tails[0], "loss")],
        [*inputs, kit.bind("target", "loss", 1)],
        outputs=[kit.bind("loss", "loss")], costs=[kit.bind("loss", "loss")], **top,
    )
    ex = LocalExecutor(spec, seed=0)
    gen = torch.Generator().manual_seed(53)
    params = {"src0.weight": prediction(function, shape, gen)}
    ex.load_parameters(params)
    ids = kit.source_ids([shape], BATCH)
    target = make_target(function, shape, gen)
    if function == "mse":
        target = target * 8.0  # the fp16 rounding of the target is part of the computation

    pred16 = params["src0.weight"].half().float().view(BATCH, *shape).requires_grad_()
    t = target.half().float() if function == "mse" else target
    loss_ref = ref_cost(function, pred16, t)
    loss_ref.backward()

    value = ex.forward({**ids, "target": target})["loss"]
    assert value.dtype == torch.float32
    kit.check_close(value, loss_ref, "fp32 loss of fp16 activations")
    loss = ex.train_step({**ids, "target": target}, update=False)["loss"]
    kit.check_loss(loss, loss_ref)
    # the gradient travels in fp16 (loss-scaled), so it carries fp16 rounding: compare at fp16 precision
    grad = ex.gradients()["src0.weight"].view(BATCH, *shape)
    assert pred16.grad is not None
    kit.check_close(grad, pred16.grad, "fp16 gradient", rtol=2e-3, atol=1e-6)
