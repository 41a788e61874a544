"""SPEC §14 operator test vectors (float32; atol 1e-5, rtol 1e-4), run through catalog nodes."""

from __future__ import annotations

import torch

from dcnr import LocalExecutor

A = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def run(kit, nodes, edges, inputs, feed, params=None) -> torch.Tensor:
    spec = kit.network(nodes, edges, inputs, outputs=[kit.bind("y", nodes[-1]["id"])])
    ex = LocalExecutor(spec, seed=0)
    if params is not None:
        ex.load_parameters(params)
    return ex.forward(feed)["y"]


def test_matmul(kit) -> None:
    """A(2×3) · B(3×2) = [[58,64],[139,154]]: a bias-free linear with weight Bᵀ applied to A's rows."""
    b = torch.tensor([[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]])
    y = run(kit, [kit.node("mm", "linear", in_dim=3, out_dim=2, bias=False)], [], [kit.bind("a", "mm")],
            {"a": torch.tensor([A])}, params={"mm.weight": b.t().contiguous()})
    kit.check_close(y, torch.tensor([[[58.0, 64.0], [139.0, 154.0]]]))


def test_add(kit) -> None:
    """[1,2,3] + [4,5,6] = [5,7,9] with an `add` node of two slots."""
    y = run(kit, [kit.node("sum", "add")], [], [kit.bind("a", "sum", 0), kit.bind("b", "sum", 1)],
            {"a": torch.tensor([[1.0, 2.0, 3.0]]), "b": torch.tensor([[4.0, 5.0, 6.0]])})
    kit.check_close(y, torch.tensor([[5.0, 7.0, 9.0]]))


def test_sum_over_axis0(kit) -> None:
    """Sum over axis 0 of [[1,2,3],[4,5,6]] = [5,7,9]. The catalog has no reduction node, so it is
    expressed as reshape to [6] followed by a bias-free linear whose weight is [I₃ I₃] (each output
    adds the two elements of its column)."""
    weight = torch.cat([torch.eye(3), torch.eye(3)], dim=1)  # (3, 6)
    y = run(kit,
            [kit.node("flat", "reshape", target_shape=[6]),
             kit.node("colsum", "linear", in_dim=6, out_dim=3, bias=False)],
            [kit.edge("flat", "colsum")], [kit.bind("m", "flat")],
            {"m": torch.tensor([A])}, params={"colsum.weight": weight})
    kit.check_close(y, torch.tensor([[5.0, 7.0, 9.0]]))


def test_relu(kit) -> None:
    """relu([-2,-0.5,0,0.5,2]) = [0,0,0,0.5,2]."""
    y = run(kit, [kit.node("r", "relu")], [], [kit.bind("x", "r")],
            {"x": torch.tensor([[-2.0, -0.5, 0.0, 0.5, 2.0]])})
    kit.check_close(y, torch.tensor([[0.0, 0.0, 0.0, 0.5, 2.0]]))


def test_transpose(kit) -> None:
    """transpose([[1,2,3],[4,5,6]]) = [[1,4],[2,5],[3,6]]. The catalog has no transpose node, so it is
    expressed as reshape [6] -> bias-free linear holding the index permutation (i, j) -> (j, i) ->
    reshape [3, 2]."""
    rows, cols = 2, 3
    perm = torch.zeros(rows * cols, rows * cols)
    for i in range(rows):
        for j in range(cols):
            perm[j * rows + i, i * cols + j] = 1.0  # output (j, i) takes input (i, j)
    y = run(kit,
            [kit.node("flat", "reshape", target_shape=[6]),
             kit.node("perm", "linear", in_dim=6, out_dim=6, bias=False),
             kit.node("back", "reshape", target_shape=[3, 2])],
            [kit.edge("flat", "perm"), kit.edge("perm", "back")], [kit.bind("m", "flat")],
            {"m": torch.tensor([A])}, params={"perm.weight": perm})
    kit.check_close(y, torch.tensor([[[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]]))
