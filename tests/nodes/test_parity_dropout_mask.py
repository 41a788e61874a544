"""`dropout` and `mask`: values, gradients, and deterministic randomness.

In training the runtime does not hand back intermediate values, so the random mask
of a step is read from the gradient: with an mse cost against a random target, the
input gradient of a dropped/masked element is exactly zero and (almost surely) no
other element's is. The loss and every gradient are then checked against a plain
PyTorch reference that uses that mask, which also proves the forward values.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dcnr import LocalExecutor

BATCH, SEQ, DIM = 4, 6, 5


def chain(kit, ntype: str, config: dict[str, Any], shape: tuple[int, ...] = (SEQ, DIM), batch: int = BATCH,
          seed: int = 0):
    """source -> node under test -> mse cost, as a network spec."""
    sources, edges, inputs, tails = kit.source_nodes([shape], batch)
    return kit.network(
        [*sources, kit.node("n", ntype, **config), kit.node("loss", "cost", cost_function="mse")],
        [*edges, kit.edge(tails[0], "n"), kit.edge("n", "loss")],
        [*inputs, kit.bind("target", "loss", 1)],
        outputs=[kit.bind("y", "n")], costs=[kit.bind("loss", "loss")], seed=seed,
    )


def setup(kit, spec, shape: tuple[int, ...] = (SEQ, DIM), batch: int = BATCH, seed: int = 41,
          executor_seed: int | None = 0):
    ex = LocalExecutor(spec, seed=executor_seed)
    params = kit.randomize(ex, seed=seed, sources=["src0"])
    ids = kit.source_ids([shape], batch)
    target = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed + 1))
    return ex, params, {**ids, "target": target}


def input_grad(ex: LocalExecutor, shape: tuple[int, ...], batch: int = BATCH) -> torch.Tensor:
    return ex.gradients()["src0.weight"].view(batch, *shape)


# -- dropout -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_dropout_training_parity(kit, micro_batches: int, rate: float) -> None:
    """Training output = x·mask/(1-rate) and input grad = upstream·mask/(1-rate), for the mask in use."""
    spec = chain(kit, "dropout", {"rate": rate})
    ex, params, feed = setup(kit, spec)
    loss = ex.train_step(feed, micro_batches=micro_batches, update=False)["loss"]
    keep = input_grad(ex, (SEQ, DIM)) != 0
    assert 0 < int(keep.sum()) < keep.numel()

    leaves = kit.make_leaves(params)
    x = leaves["src0.weight"].view(BATCH, SEQ, DIM)
    y = x * keep.float() / (1.0 - rate)
    loss_ref = kit.mse(y, feed["target"])
    loss_ref.backward()
    kit.check_loss(loss, loss_ref, "dropout training loss")
    kit.check_grads(ex, leaves, "dropout")


def test_dropout_is_reproducible(kit, micro_batches: int) -> None:
    """The same (seed, step, micro-batch) gives the same mask: two fresh executors agree bit for bit."""
    spec = chain(kit, "dropout", {"rate": 0.5})
    runs = []
    for _ in range(2):
        ex, _, feed = setup(kit, spec)
        loss = ex.train_step(feed, micro_batches=micro_batches, update=False)["loss"]
        runs.append((loss, ex.gradients()))
    assert runs[0][0] == runs[1][0]
    for name, g in runs[0][1].items():
        assert torch.equal(g, runs[1][1][name]), name


def test_dropout_mask_changes_with_step_micro_batch_and_seed(kit) -> None:
    """Different steps, different micro-batches and different network seeds draw different masks."""
    spec = chain(kit, "dropout", {"rate": 0.5})
    ex, _, feed = setup(kit, spec)
    ex.train_step(feed, update=False)
    step0 = input_grad(ex, (SEQ, DIM)) != 0
    ex.update()  # step 1
    ex.train_step(feed, update=False)
    step1 = input_grad(ex, (SEQ, DIM)) != 0
    assert not torch.equal(step0, step1)

    ex2, _, feed2 = setup(kit, spec)
    ex2.train_step(feed2, micro_batches=2, update=False)
    masks = input_grad(ex2, (SEQ, DIM)) != 0
    half = BATCH // 2
    assert not torch.equal(masks[:half], masks[half:])  # micro-batch 0 vs 1, same shapes

    ex3, _, feed3 = setup(kit, spec, executor_seed=1)
    ex3.train_step(feed3, update=False)
    assert not torch.equal(step0, input_grad(ex3, (SEQ, DIM)) != 0)


def test_dropout_rate_zero_is_identity(kit, micro_batches: int) -> None:
    """rate 0 in training is the identity, for values and gradients."""
    kit.run_parity("dropout", {"rate": 0.0}, [(SEQ, DIM)], lambda xs, p: xs[0] * 1.0, micro_batches=micro_batches)


def test_dropout_evaluation_is_identity(kit) -> None:
    """In evaluation (`forward`) dropout passes its input through unchanged, whatever the rate."""
    spec = chain(kit, "dropout", {"rate": 0.7})
    ex, params, feed = setup(kit, spec)
    y = ex.forward({"ids0": feed["ids0"]})["y"]
    assert torch.equal(y, params["src0.weight"].view(BATCH, SEQ, DIM))


def test_dropout_default_rate_and_kept_fraction(kit) -> None:
    """On a large tensor the kept fraction is close to 1 - rate (default rate 0.1, and rate 0.3)."""
    shape, batch = (64, 64), 2
    for config, rate in (({}, 0.1), ({"rate": 0.3}, 0.3)):
        spec = chain(kit, "dropout", config, shape=shape, batch=batch)
        ex, _, feed = setup(kit, spec, shape=shape, batch=batch)
        ex.train_step(feed, update=False)
        kept = float((input_grad(ex, shape, batch) != 0).float().mean())
        n = batch * shape[0] * shape[1]
        sigma = (rate * (1 - rate) / n) ** 0.5
        assert abs(kept - (1 - rate)) < 6 * sigma, (kept, rate)


# -- mask ----------------------------------------------------------------------------------------
def ref_mask(causal: bool, mask_val: float):
    def f(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
        (x,) = xs
        s = x.shape[-1]
        future = torch.tensor([[j > i for j in range(s)] for i in range(s)])
        if not causal:
            future = torch.zeros_like(future)
        return torch.where(future, torch.full_like(x, mask_val), x)

    return f


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "none"])
@pytest.mark.parametrize("shape", [(5, 5), (2, 4, 4)], ids=["SxS", "HxSxS"])
@pytest.mark.parametrize("mask_val", [-3.5, -1e9])
def test_mask_parity(kit, micro_batches: int, causal: bool, shape: tuple[int, ...], mask_val: float) -> None:
    """mask: j > i replaced by mask_val (in training and evaluation); masked positions get zero gradient."""
    run = kit.run_parity("mask", {"causal": causal, "mask_val": mask_val}, [shape], ref_mask(causal, mask_val),
                         micro_batches=micro_batches)
    if causal:
        g = run.ex.gradients()["src0.weight"].view(4, *shape)
        future = torch.ones(shape[-1], shape[-1], dtype=torch.bool).triu(1)
        assert not g[..., future].any()


def test_mask_default_value(kit) -> None:
    """The default mask_val is -1e9 and causal is the default."""
    run = kit.run_parity("mask", {}, [(4, 4)], ref_mask(True, -1e9))
    assert float(run.y_ref.min()) == pytest.approx(-1e9)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "none"])
def test_mask_random_training_parity(kit, micro_batches: int, causal: bool) -> None:
    """random_prob masks extra positions in training only; loss and gradients match the reference
    for the mask read from the gradient, and causal positions are always among the masked ones."""
    s, mask_val = 6, -2.5
    shape = (s, s)
    spec = chain(kit, "mask", {"causal": causal, "mask_val": mask_val, "random_prob": 0.3, "seed": 7}, shape=shape)
    ex, params, feed = setup(kit, spec, shape=shape)
    loss = ex.train_step(feed, micro_batches=micro_batches, update=False)["loss"]
    masked = input_grad(ex, shape) == 0
    future = torch.ones(s, s, dtype=torch.bool).triu(1)
    if causal:
        assert masked[..., future].all()
    extra = masked & ~future if causal else masked
    assert extra.any() and not masked.all()

    leaves = kit.make_leaves(params)
    x = leaves["src0.weight"].view(BATCH, *shape)
    y = torch.where(masked, torch.full_like(x, mask_val), x)
    loss_ref = kit.mse(y, feed["target"])
    loss_ref.backward()
    kit.check_loss(loss, loss_ref, "mask training loss")
    kit.check_grads(ex, leaves, "random mask")

    # evaluation: no random masking, only the causal one
    y_eval = ex.forward({"ids0": feed["ids0"]})["y"]
    kit.check_close(y_eval, ref_mask(causal, mask_val)([params["src0.weight"].view(BATCH, *shape)], {}), "eval")


def test_mask_random_is_deterministic_given_seed(kit) -> None:
    """random_prob: the mask is a function of (config seed, node, step, micro-batch): fresh executors
    (even with another network seed) reproduce it, another config seed or step changes it, and the
    masked fraction is near random_prob."""
    s = 32
    shape = (s, s)
    cfg = {"causal": False, "random_prob": 0.25, "seed": 3}

    def mask_of(config: dict[str, Any], executor_seed: int = 0, steps: int = 0) -> torch.Tensor:
        spec = chain(kit, "mask", config, shape=shape, batch=2)
        ex, _, feed = setup(kit, spec, shape=shape, batch=2, executor_seed=executor_seed)
        for _ in range(steps):
            ex.update()
        ex.train_step(feed, update=False)
        return input_grad(ex, shape, batch=2) == 0

    base = mask_of(cfg)
    assert torch.equal(base, mask_of(cfg))
    assert torch.equal(base, mask_of(cfg, executor_seed=5))  # the config seed replaces the network seed
    assert not torch.equal(base, mask_of({**cfg, "seed": 4}))
    assert not torch.equal(base, mask_of(cfg, steps=1))
    no_seed = {k: v for k, v in cfg.items() if k != "seed"}
    assert torch.equal(mask_of(no_seed), mask_of(no_seed))
    assert not torch.equal(mask_of(no_seed), mask_of(no_seed, executor_seed=5))  # then the network seed counts
    frac = float(base.float().mean())
    sigma = (0.25 * 0.75 / base.numel()) ** 0.5
    assert abs(frac - 0.25) < 6 * sigma
