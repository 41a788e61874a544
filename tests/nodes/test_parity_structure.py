"""Parity of the wiring types: `broadcast`, `stack`, `add`, `reshape`."""

from __future__ import annotations

import pytest
import torch

from dcnr import LocalExecutor


def ref_cat(axis: int):
    def f(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
        dim = axis + 1 if axis >= 0 else axis  # configured axes exclude the batch axis
        return torch.cat(xs, dim=dim)

    return f


def ref_sum(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
    total = torch.zeros_like(xs[0])
    for x in xs:
        total = total + x
    return total


def ref_reshape(target: list[int]):
    def f(xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
        (x,) = xs
        return x.reshape(x.shape[0], *target)

    return f


@pytest.mark.parametrize(
    ("axis", "shapes"),
    [
        (-1, [(5, 2), (5, 3)]),
        (-1, [(5, 2), (5, 3), (5, 1)]),
        (1, [(5, 4), (5, 2)]),
        (0, [(2, 3), (4, 3)]),
        (1, [(3, 2, 4), (3, 1, 4)]),
        (-2, [(3, 2, 4), (3, 3, 4)]),
    ],
    ids=["last-2", "last-3", "axis1", "axis0-seq", "rank3-mid", "rank3-neg2"],
)
def test_stack(kit, micro_batches: int, axis: int, shapes: list[tuple[int, ...]]) -> None:
    """stack: concatenation of the slots in slot order along `axis`; each slot gets its slice of the gradient."""
    kit.run_parity("stack", {"axis": axis}, shapes, ref_cat(axis), micro_batches=micro_batches)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_add(kit, micro_batches: int, n: int) -> None:
    """add: sum of its N input slots; every slot receives the full upstream gradient."""
    kit.run_parity("add", {}, [(5, 4)] * n, ref_sum, micro_batches=micro_batches)


@pytest.mark.parametrize(
    ("shape", "target", "result"),
    [
        ((5, 6), [6, 5], [6, 5]),
        ((5, 6), [-1], [30]),
        ((5, 6), [3, -1, 2], [3, 5, 2]),
        ((3, 2, 4), [4, 6], [4, 6]),
        ((3, 2, 4), "[24]", [24]),
    ],
    ids=["swap", "flat", "infer-mid", "rank3", "string"],
)
def test_reshape(kit, micro_batches: int, shape: tuple[int, ...], target: list[int] | str, result: list[int]) -> None:
    """reshape keeps the batch axis and row-major order (one -1 inferred); the gradient is reshaped back."""
    run = kit.run_parity("reshape", {"target_shape": target}, [shape], ref_reshape(result),
                         micro_batches=micro_batches)
    assert run.spec.nodes["n"].output_shapes[0] == tuple(result)


@pytest.mark.parametrize("dead_branch", [False, True], ids=["all-to-cost", "one-dead-output"])
def test_broadcast(kit, micro_batches: int, dead_branch: bool) -> None:
    """broadcast: every slot carries the input; backward sums the slots' gradients (a slot that
    leads to no cost contributes zero)."""
    batch, seq, dim = 4, 5, 3
    sources, src_edges, src_inputs, _ = kit.source_nodes([(seq, dim)], batch)
    nodes = [*sources, kit.node("bc", "broadcast", num_outputs=4),
             kit.node("la", "linear", in_dim=dim, out_dim=dim),
             kit.node("lb", "linear", in_dim=dim, out_dim=dim, bias=False),
             kit.node("aux", "relu"),
             kit.node("sum", "add"),
             kit.node("loss", "cost", cost_function="mse")]
    edges = [*src_edges, kit.edge("src0", "bc"),
             kit.edge("bc", "la", 0), kit.edge("bc", "lb", 1), kit.edge("bc", "aux", 3),
             kit.edge("la", "sum", 0, 0), kit.edge("lb", "sum", 0, 1), kit.edge("bc", "sum", 2, 2),
             kit.edge("sum", "loss")]
    if not dead_branch:
        nodes.insert(-1, kit.node("sum2", "add"))
        edges[-1] = kit.edge("sum", "sum2", 0, 0)
        edges += [kit.edge("aux", "sum2", 0, 1), kit.edge("sum2", "loss")]
    last = "sum" if dead_branch else "sum2"
    spec = kit.network(nodes, edges, [*src_inputs, kit.bind("target", "loss", 1)],
                       outputs=[kit.bind("y", last), kit.bind("aux", "aux"), kit.bind("copy", "bc", 2)],
                       costs=[kit.bind("loss", "loss")])
    ex = LocalExecutor(spec, seed=0)
    params = kit.randomize(ex, seed=31, sources=["src0"])
    leaves = kit.make_leaves(params)
    x = leaves["src0.weight"].view(batch, seq, dim)
    y_ref = (x @ leaves["la.weight"].t() + leaves["la.bias"]) + x @ leaves["lb.weight"].t() + x
    if not dead_branch:
        y_ref = y_ref + torch.where(x > 0, x, torch.zeros_like(x))
    target = torch.randn(batch, seq, dim, generator=torch.Generator().manual_seed(32))
    loss_ref = kit.mse(y_ref, target)
    loss_ref.backward()

    ids = kit.source_ids([(seq, dim)], batch)
    out = ex.forward(ids)
    kit.check_close(out["y"], y_ref, "forward")
    kit.check_close(out["copy"], x, "broadcast copy")
    loss = ex.train_step({**ids, "target": target}, micro_batches=micro_batches, update=False)["loss"]
    kit.check_loss(loss, loss_ref)
    kit.check_grads(ex, leaves, "broadcast")
