"""`LocalExecutor` contract: determinism, micro-batches, checkpoints, optimizers, schedules,
generation, input errors, learning, and gradient locality between VNodes (SPEC §2)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml

import dcnr
from dcnr.runtime.sampling import sample_tokens
from dcnr.runtime.vnode import Parameter, RequestId
from dcnr.spec.transformer import transformer_lm

TINY_LM = Path(__file__).resolve().parents[2] / "examples" / "networks" / "tiny_lm.yml"
VOCAB, SEQ = 50, 8



def small_lm(dropout: float = 0.0, seed: int | None = None, **extra: Any) -> dcnr.LocalExecutor:
    """The §13 topology, shrunk (2 blocks × 2 heads, dim 16, context 8, vocab 50)."""
    doc = transformer_lm("small", blocks=2, heads=2, head_dim=8, dim=16, seq_len=SEQ, vocab_size=VOCAB,
                         ffn_dim=32, head_hidden=64, dropout=dropout, lr=1e-2, extra_config=extra or None)
    return dcnr.LocalExecutor(dcnr.parse_network(yaml.safe_dump(doc)), seed=seed)


def linear_net(**config: Any) -> dcnr.LocalExecutor:
    """One `linear` node (3 -> 2) trained against an mse `cost`, lr exposed as a metric."""
    doc = {
        "name": "one-linear",
        "seed": 11,
        "nodes": [
            {"id": "fc", "type": "linear", "config": {"in_dim": 3, "out_dim": 2, **config}},
            {"id": "loss", "type": "cost", "config": {"cost_function": "mse"}},
        ],
        "edges": [{"from": "fc", "to": "loss"}],
        "inputs": [{"name": "x", "node_id": "fc"}, {"name": "y", "node_id": "loss", "slot_id": 1}],
        "outputs": [{"name": "out", "node_id": "fc"}],
        "costs": [{"name": "mse", "node_id": "loss"}],
        "metrics": [{"name": "fc_lr", "type": "learning_rate", "node_id": "fc"}],
    }
    return dcnr.LocalExecutor(dcnr.parse_network(yaml.safe_dump(doc)))


def lm_batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    seqs = torch.randint(0, VOCAB, (n, SEQ + 1), generator=torch.Generator().manual_seed(seed))
    return {"tokens": seqs[:, :-1], "targets": seqs[:, 1:]}


def linear_batch(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return {"x": torch.randn(4, 3, generator=gen), "y": torch.randn(4, 2, generator=gen)}


def optimizer_tensors(ex: dcnr.LocalExecutor) -> dict[str, torch.Tensor]:
    return {f"{nid}.{k}": t.clone() for nid, v in ex.vnodes.items() for k, t in v.optimizer_state().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30))


# -- determinism -----------------------------------------------------------------------------


def test_same_seed_and_data_give_bit_identical_parameters() -> None:
    """5 steps with dropout and 2 micro-batches are bit-identical for equal seeds; another seed
    differs, and dropout really acted (else the check would be vacuous)."""

    def run(dropout: float, seed: int | None) -> tuple[list[float], dict[str, torch.Tensor]]:
        ex = small_lm(dropout=dropout, seed=seed)
        losses = [ex.train_step(lm_batch(seed=s), micro_batches=2)["ce_loss"] for s in range(5)]
        return losses, ex.parameters()

    losses_a, params_a = run(0.1, None)
    losses_b, params_b = run(0.1, None)
    assert losses_a == losses_b
    assert_same(params_a, params_b)
    _, params_other_seed = run(0.1, 1)
    assert all(not torch.equal(params_a[k], params_other_seed[k]) for k in params_a if not k.endswith(".bias"))
    losses_no_dropout, _ = run(0.0, None)
    assert losses_no_dropout[0] != losses_a[0]


def test_gradients_are_summed_in_micro_batch_order_whatever_the_arrival_order() -> None:
    """A `Parameter` adds contributions in (micro-batch, rank) order even when they arrive shuffled."""
    gen = torch.Generator().manual_seed(0)
    grads = {(mb, rank): torch.randn(64, generator=gen) * 10.0 ** (mb - rank) for mb in range(4) for rank in range(2)}
    in_order = Parameter(torch.zeros(64), contributors=2)
    for key in sorted(grads):
        in_order.accumulate(*key, grads[key])
    for seed in range(3):
        keys = list(grads)
        order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed))
        shuffled = Parameter(torch.zeros(64), contributors=2)
        for i in order.tolist():
            shuffled.accumulate(*keys[i], grads[keys[i]])
        assert shuffled.settled()
        assert torch.equal(shuffled.grad, in_order.grad)


# -- micro-batches and zero_grad ---------------------------------------------------------------


def test_micro_batch_accumulation_equals_the_full_batch_gradient() -> None:
    """Splitting a batch into 2 or 4 micro-batches gives the full-batch loss and gradients."""
    data = lm_batch(n=4)
    results = {}
    for m in (1, 2, 4):
        ex = small_lm()
        loss = ex.train_step(data, micro_batches=m, update=False)["ce_loss"]
        results[m] = (loss, ex.gradients())
    full_loss, full = results[1]
    for m in (2, 4):
        loss, grads = results[m]
        assert loss == pytest.approx(full_loss, rel=1e-6)
        for key, g in grads.items():
            assert rel_err(g, full[key]) <= 1e-5, f"M={m} {key}: {rel_err(g, full[key]):.2e}"


def test_train_step_without_update_accumulates_and_zero_grad_resets() -> None:
    """Two `train_step(update=False)` calls add their gradients; `zero_grad` clears them, and
    the step then recomputes bit-identically."""
    a, b = lm_batch(seed=1), lm_batch(seed=2)
    fresh_a, fresh_b = small_lm(), small_lm()
    fresh_a.train_step(a, update=False)
    fresh_b.train_step(b, micro_batches=2, update=False)
    ga, gb = fresh_a.gradients(), fresh_b.gradients()

    ex = small_lm()
    ex.train_step(a, update=False)
    assert_same(ex.gradients(), ga)
    ex.train_step(b, micro_batches=2, update=False)
    for key, g in ex.gradients().items():
        assert rel_err(g, ga[key] + gb[key]) <= 1e-6, key
    ex.zero_grad()
    for key, g in ex.gradients().items():
        assert not g.any(), f"{key} not cleared"
    before = ex.parameters()
    ex.train_step(a, update=False)
    assert_same(ex.gradients(), ga)
    assert_same(ex.parameters(), before)
    ex.update()
    fresh_a.update()
    assert_same(ex.parameters(), fresh_a.parameters())


# -- checkpoints -------------------------------------------------------------------------------


def test_save_load_round_trip_continues_bit_identically(tmp_path: Path) -> None:
    """`save`/`load` restores parameters, optimizer state, step and schedule position; training
    continued from the checkpoint equals training continued in the original executor."""
    schedule = {"lr_schedule": "cosine", "warmup_steps": 2, "decay_steps": 6, "min_lr": 1e-3}
    original = small_lm(dropout=0.1, **schedule)
    for s in range(3):
        original.train_step(lm_batch(seed=s), micro_batches=2)
    path = tmp_path / "ckpt.safetensors"
    original.save(path)

    restored = small_lm(dropout=0.1, **schedule)
    restored.train_step(lm_batch(seed=9))  # diverge first: load must overwrite everything
    restored.load(path)
    assert_same(restored.parameters(), original.parameters())
    assert_same(optimizer_tensors(restored), optimizer_tensors(original))
    assert optimizer_tensors(original), "Adam state must exist, or the comparison is vacuous"
    assert restored.step == original.step == 3
    assert all(v.step == 3 for v in restored.vnodes.values())
    assert restored.metrics() == original.metrics()
    for s in range(3, 6):
        got = restored.train_step(lm_batch(seed=s), micro_batches=2)
        want = original.train_step(lm_batch(seed=s), micro_batches=2)
        assert got == want, f"step {s}"
    assert_same(restored.parameters(), original.parameters())
    assert_same(optimizer_tensors(restored), optimizer_tensors(original))


def test_load_rejects_a_checkpoint_of_another_network(tmp_path: Path) -> None:
    """A checkpoint whose tensors do not fit this network is refused with ValueError."""
    path = tmp_path / "lm.safetensors"
    small_lm().save(path)
    with pytest.raises(ValueError, match="do not match"):
        linear_net().load(path)


def test_load_parameters_rejects_wrong_keys_and_shapes_without_partial_writes() -> None:
    """Missing, unknown or mis-shaped tensors raise ValueError and change nothing."""
    ex = linear_net()
    good = ex.parameters()
    changed = {k: v + 1.0 for k, v in good.items()}
    with pytest.raises(ValueError, match=r"missing \['fc.bias'\]"):
        ex.load_parameters({"fc.weight": changed["fc.weight"]})
    with pytest.raises(ValueError, match=r"unknown \['fc.scale'\]"):
        ex.load_parameters({**changed, "fc.scale": torch.ones(2)})
    with pytest.raises(ValueError, match=r"fc.bias: expected shape \[2\], got \[3\]"):
        ex.load_parameters({"fc.weight": changed["fc.weight"], "fc.bias": torch.zeros(3)})
    assert_same(ex.parameters(), good)
    ex.load_parameters(changed)
    assert_same(ex.parameters(), changed)


@pytest.mark.parametrize("precision", ["float32", "fp16"])
def test_loaded_parameters_are_what_forward_computes_with(precision: str) -> None:
    """After `load_parameters`, forward uses the new values (low-precision copies refreshed)."""
    ex = linear_net(precision=precision)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    ex.forward({"x": x})  # builds any cached compute copies first
    w, b = torch.randn(2, 3), torch.randn(2)
    ex.load_parameters({"fc.weight": w, "fc.bias": b})
    got = ex.forward({"x": x})["out"].float()
    tol = 1e-5 if precision == "float32" else 1e-2
    torch.testing.assert_close(got, x @ w.t() + b, rtol=tol, atol=tol)


# -- optimizers and schedules ---------------------------------------------------------------


@pytest.mark.parametrize(
    "config, make_torch_opt",
    [
        ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
         lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01)),
        ({"optimizer": "adamw", "lr": 0.05, "betas": [0.8, 0.95], "weight_decay": 0.1},
         lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.8, 0.95), weight_decay=0.1)),
        ({"optimizer": "adam", "lr": 0.05, "betas": "[0.7, 0.9]", "weight_decay": 0.1},
         lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.7, 0.9), weight_decay=0.1)),
    ],
    ids=["sgd-momentum", "adamw", "adam-l2"],
)
def test_optimizer_matches_torch_optim_on_one_linear_node(config: dict[str, Any], make_torch_opt: Any) -> None:
    """The node's configured optimizer follows the same torch.optim optimizer on nn.Linear."""
    ex = linear_net(**config)
    ref = torch.nn.Linear(3, 2)
    with torch.no_grad():
        ref.weight.copy_(ex.parameters()["fc.weight"])
        ref.bias.copy_(ex.parameters()["fc.bias"])
    start = ex.parameters()
    opt = make_torch_opt(list(ref.parameters()))
    for step in range(6):
        data = linear_batch(step)
        loss = ex.train_step(data, micro_batches=2)["mse"]
        opt.zero_grad()
        want = F.mse_loss(ref(data["x"]), data["y"])
        want.backward()
        opt.step()
        assert loss == pytest.approx(want.item(), rel=1e-5)
    got = ex.parameters()
    for key, param in (("fc.weight", ref.weight), ("fc.bias", ref.bias)):
        assert not torch.allclose(got[key], start[key])
        torch.testing.assert_close(got[key], param.detach(), rtol=1e-5, atol=1e-6)


def _expected_lrs() -> dict[str, tuple[dict[str, Any], list[float]]]:
    """Schedules and their learning rate at steps 0..15, derived by hand."""
    cos = [0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - 4) / 10))) for s in range(16)]
    cosine = [0.025, 0.05, 0.075, 0.1, *cos[4:]]
    # spot checks of the formula: start of decay, half way, the end and beyond
    assert cosine[4] == pytest.approx(0.1) and cosine[9] == pytest.approx(0.055)
    assert cosine[14] == pytest.approx(0.01) and cosine[15] == pytest.approx(0.01)
    return {
        "constant": ({"lr": 0.3}, [0.3] * 16),
        "linear_warmup": ({"lr": 0.2, "lr_schedule": "linear_warmup", "warmup_steps": 5},
                          [0.04, 0.08, 0.12, 0.16, 0.2] + [0.2] * 11),
        "cosine": ({"lr": 0.1, "lr_schedule": "cosine", "warmup_steps": 4, "decay_steps": 10, "min_lr": 0.01},
                   cosine),
    }


@pytest.mark.parametrize("schedule", ["constant", "linear_warmup", "cosine"])
def test_learning_rate_metric_follows_the_schedule_and_is_the_rate_applied(schedule: str) -> None:
    """`metrics()` reports lr(step) of the schedule, and plain SGD moves parameters by exactly it."""
    config, expected = _expected_lrs()[schedule]
    ex = linear_net(optimizer="sgd", **config)
    for step, lr in enumerate(expected):
        assert ex.metrics()["fc_lr"] == pytest.approx(lr, rel=1e-9), f"step {step}"
        before = ex.parameters()
        ex.train_step(linear_batch(step), update=False)
        grads = ex.gradients()
        assert ex.update()
        for key, value in ex.parameters().items():
            torch.testing.assert_close(value, before[key] - lr * grads[key], rtol=1e-6, atol=1e-7)


# -- generation --------------------------------------------------------------------------------


def greedy_reference(ex: dcnr.LocalExecutor, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        context = torch.tensor(ids[-SEQ:])[None]  # (1, ≤S): the last seq_len tokens
        logits = ex.forward({"tokens": context})["logits"][0, -1]  # (V,)
        ids.append(int(logits.argmax()))
    return ids


@pytest.fixture(scope="module")
def trained_small_lm() -> dcnr.LocalExecutor:
    """A small LM trained a little, so its next-token distributions are not flat."""
    ex = small_lm()
    for s in range(8):
        ex.train_step(lm_batch(seed=s))
    return ex


def test_generate_is_seeded_and_returns_prompt_plus_new_tokens(trained_small_lm: dcnr.LocalExecutor) -> None:
    """Same seed, same tokens; another seed, other tokens; output = prompt + max_new_tokens."""
    ex = trained_small_lm
    prompt = [3, 14, 15]
    a = ex.generate(prompt, max_new_tokens=10, seed=5)
    b = ex.generate(torch.tensor(prompt), max_new_tokens=10, seed=5)
    c = ex.generate(prompt, max_new_tokens=10, seed=6)
    assert a.dtype == torch.long and a.shape == (13,)
    assert a[:3].tolist() == prompt
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert ((a >= 0) & (a < VOCAB)).all()


@pytest.mark.parametrize("prompt", [[7, 1], list(range(20, 32))], ids=["short", "longer-than-seq_len"])
def test_generate_temperature_zero_is_greedy(trained_small_lm: dcnr.LocalExecutor, prompt: list[int]) -> None:
    """temperature 0 picks argmax of the forward logits over a sliding window of seq_len tokens."""
    out = trained_small_lm.generate(prompt, max_new_tokens=9, temperature=0.0)
    assert out.tolist() == greedy_reference(trained_small_lm, prompt, 9)
    assert len(out) == len(prompt) + 9


def test_generate_top_k_restricts_choices(trained_small_lm: dcnr.LocalExecutor) -> None:
    """Every sampled token lies in the top-k of its logits; top_k=1 is greedy."""
    ex = trained_small_lm
    prompt = [2, 9, 4]
    out = ex.generate(prompt, max_new_tokens=12, temperature=1.5, top_k=3, seed=0).tolist()
    for i in range(len(prompt), len(out)):
        logits = ex.forward({"tokens": torch.tensor(out[:i][-SEQ:])[None]})["logits"][0, -1]
        allowed = set(torch.topk(logits, 3).indices.tolist())
        assert out[i] in allowed, f"token {i}: {out[i]} not in top-3 {sorted(allowed)}"
    one = ex.generate(prompt, max_new_tokens=6, temperature=1.0, top_k=1, seed=0)
    assert one.tolist() == greedy_reference(ex, prompt, 6)


def test_generate_at_any_temperature_samples_or_refuses_it(trained_small_lm: dcnr.LocalExecutor) -> None:
    """A temperature that is not a number is refused; a tiny one is greedy. Both made a fuzzed ChatNetwork
    answer INTERNAL: nan logits, and logits / 1e-300 = inf, which softmax turns into nan."""
    ex, prompt = trained_small_lm, [2, 9, 4]
    for temperature in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="temperature must be a finite number"):
            ex.generate(prompt, max_new_tokens=2, temperature=temperature)
    tiny = ex.generate(prompt, max_new_tokens=6, temperature=5e-324, seed=0)
    assert tiny.tolist() == greedy_reference(ex, prompt, 6)

    def diverged(inputs: Mapping[str, torch.Tensor], outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        return {"logits": torch.full((1, SEQ, VOCAB), math.nan)}  # a network whose training diverged

    with pytest.raises(ValueError, match="no finite logits"):
        list(sample_tokens(diverged, ex.spec, prompt, 1, temperature=1.0))


# -- input errors ------------------------------------------------------------------------------


def test_input_errors_are_clear_value_errors_and_leave_the_executor_usable() -> None:
    """Unknown or missing inputs, indivisible or mismatched batches, and bad token ids raise
    ValueError naming the problem; afterwards training gives exactly a fresh executor's result."""
    ex = small_lm()
    data = lm_batch(n=4)
    with pytest.raises(ValueError, match=r"unknown input\(s\) 'labels'.*'targets', 'tokens'"):
        ex.train_step({**data, "labels": data["targets"]})
    with pytest.raises(ValueError, match=r"missing input\(s\) 'targets'"):
        ex.train_step({"tokens": data["tokens"]})
    with pytest.raises(ValueError, match="batch of 4 does not split into 3 equal micro-batches"):
        ex.train_step(data, micro_batches=3)
    with pytest.raises(ValueError, match="micro_batches must be at least 1"):
        ex.train_step(data, micro_batches=0)
    with pytest.raises(ValueError, match="different batch sizes: 'targets' 2, 'tokens' 4"):
        ex.train_step({"tokens": data["tokens"], "targets": data["targets"][:2]})
    with pytest.raises(ValueError, match="token id out of range"):
        ex.train_step({"tokens": data["tokens"] + VOCAB, "targets": data["targets"]}, micro_batches=2)
    with pytest.raises(ValueError, match="unknown output 'probs'"):
        ex.forward({"tokens": data["tokens"]}, outputs=["probs"])
    with pytest.raises(ValueError, match=r"unknown input\(s\) 'text'"):
        ex.forward({"text": data["tokens"]}, outputs=["logits"])
    with pytest.raises(ValueError, match="no network output can be computed from inputs 'text'"):
        ex.forward({"text": data["tokens"]})
    fresh = small_lm()
    assert ex.train_step(data, micro_batches=2) == fresh.train_step(data, micro_batches=2)
    assert_same(ex.parameters(), fresh.parameters())


# -- learning ----------------------------------------------------------------------------------


def test_tiny_lm_example_learns_a_repeated_pattern() -> None:
    """examples/networks/tiny_lm.yml learns a cycle of 8 tokens within 40 steps and then
    continues it greedily."""
    ex = dcnr.LocalExecutor(dcnr.load_network(TINY_LM))
    cycle = torch.tensor([5, 901, 77, 1500, 42, 8, 1999, 300])
    seqs = torch.stack([cycle.roll(-o).repeat(9)[:65] for o in range(4)])  # (4, 65), four phases
    data = {"tokens": seqs[:, :-1], "targets": seqs[:, 1:]}
    losses = [ex.train_step(data)["ce_loss"] for _ in range(40)]
    assert losses[0] == pytest.approx(math.log(2048), rel=0.05)  # starts near uniform
    assert losses[-1] < 0.5 and losses[-1] < losses[0] / 10, losses
    out = ex.generate(cycle[:3].tolist(), max_new_tokens=13, temperature=0.0)
    assert out.tolist() == cycle.repeat(2).tolist()


# -- gradient locality -------------------------------------------------------------------------


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _graph_leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors that t's autograd graph accumulates into."""
    leaves, seen, stack = [], set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.append(fn.variable)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return leaves


def test_no_vnode_holds_a_graph_into_another_vnode() -> None:
    """While a training step is in flight, every cached tensor is a detached leaf or belongs to a
    graph whose leaves sit in the same VNode's cache; messages between VNodes carry no graph."""
    ex = small_lm(dropout=0.1)
    checked = {"contexts": 0, "local_graphs": 0, "messages": 0}

    def inspect_caches() -> None:
        owner: dict[int, str] = {}
        for nid, vnode in ex.vnodes.items():
            for ctx in vnode._contexts.values():
                checked["contexts"] += 1
                held = list(_tensors(ctx.saved)) + list(_tensors(ctx.params))
                local = {id(t) for t in held if t.grad_fn is None}
                for t in held:
                    if t.grad_fn is None:
                        if t.requires_grad:  # a leaf of this VNode's local graph: never shared
                            assert owner.setdefault(id(t), nid) == nid, f"{nid} shares a graph leaf with {owner[id(t)]}"
                        continue
                    checked["local_graphs"] += 1
                    for leaf in _graph_leaves(t):
                        assert id(leaf) in local, f"{nid}: cached graph reaches a tensor it does not own"
                if vnode.impl.__class__.__name__ in ("AttentionHead", "LayerNorm", "Cost"):
                    leaves_in = ctx.saved[0]
                    assert all(x.grad_fn is None for x in leaves_in if isinstance(x, torch.Tensor)), nid

    def watch(vnode: Any) -> None:
        receive_input, receive_grad, start_backward = vnode.receive_input, vnode.receive_grad, vnode.start_backward

        def on_input(rid: Any, slot: int, value: Any, training: bool) -> Any:
            for t in _tensors(value):
                checked["messages"] += 1
                assert t.grad_fn is None and not t.requires_grad, f"input to {vnode.id} carries a graph"
            return receive_input(rid, slot, value, training)

        def on_grad(rid: Any, edge: int, grad: Any) -> Any:
            for t in _tensors(grad):
                checked["messages"] += 1
                assert t.grad_fn is None and not t.requires_grad, f"gradient to {vnode.id} carries a graph"
            return receive_grad(rid, edge, grad)

        def on_backward(rid: Any, seed: torch.Tensor) -> Any:
            inspect_caches()  # the whole forward is cached at this moment
            return start_backward(rid, seed)

        vnode.receive_input, vnode.receive_grad, vnode.start_backward = on_input, on_grad, on_backward

    for vnode in ex.vnodes.values():
        watch(vnode)
    ex.train_step(lm_batch(), micro_batches=2)
    n_differentiable = sum(1 for v in ex.vnodes.values() if v.grad_edges or v.is_cost_root)
    assert checked["contexts"] == 2 * n_differentiable
    assert checked["local_graphs"] > 0 and checked["messages"] > 0
    assert all(not v._contexts and not v._grads and not v._inputs for v in ex.vnodes.values()), "caches not freed"


def test_load_adopts_the_checkpoint_seed(tmp_path: Path) -> None:
    """A checkpoint restores the seed too, so dropout masks continue exactly as in the original run."""
    doc = transformer_lm("s", blocks=1, heads=2, head_dim=4, dim=8, seq_len=6, vocab_size=20, dropout=0.3)
    spec = dcnr.parse_network(yaml.safe_dump(doc))
    x = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(1))
    batch = {"tokens": x, "targets": x.roll(1, 1)}
    a = dcnr.LocalExecutor(spec, seed=5)
    a.train_step(batch)
    a.save(tmp_path / "c.safetensors")
    b = dcnr.LocalExecutor(spec, seed=99)
    b.load(tmp_path / "c.safetensors")
    assert b.seed == 5
    assert a.train_step(batch) == b.train_step(batch)
    assert all(torch.equal(v, b.parameters()[k]) for k, v in a.parameters().items())


def test_inference_does_not_grow_duplicate_memory_without_bound() -> None:
    """Finished request ids are remembered for duplicate detection, but only up to a bound."""
    from dcnr.runtime.vnode import DONE_MEMORY

    spec = dcnr.parse_network(yaml.safe_dump(transformer_lm("m", blocks=1, heads=1, head_dim=2, dim=4, seq_len=2,
                                                            vocab_size=5, dropout=0.0)))
    ex = dcnr.LocalExecutor(spec)
    vnode = ex.vnodes["embedder"]
    for rid in range(DONE_MEMORY + 10):
        vnode.receive_input(RequestId(f"infer/{rid}", rid, 0, "infer"), 0, torch.zeros(1, 2, dtype=torch.long), False)
    assert len(vnode._done) == DONE_MEMORY
    # a duplicate of a recent request is still ignored
    assert vnode.receive_input(RequestId(f"infer/{DONE_MEMORY + 9}", DONE_MEMORY + 9, 0, "infer"), 0,
                               torch.zeros(1, 2, dtype=torch.long), False) is None
