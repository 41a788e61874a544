"""Shared helpers of the per-node parity suite (exposed as fixtures).

Every parity test builds a tiny network from YAML text, runs it with
`LocalExecutor` exactly as a user would (`forward`, `train_step(update=False)`,
`gradients`), and compares values and gradients with a reference written in
plain PyTorch with torch autograd, using the same parameter values.

Input gradients come for free from the "source" used in front of the node under
test: an `embedder` without positions whose vocabulary has one row per
(sample, position) and whose ids are `arange`. Its output *is* its weight, so the
gradient of that weight is, element by element, the input gradient of the node
under test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import yaml

import dcnr
from dcnr import LocalExecutor, NetworkSpec

RTOL = 1e-4
ATOL = 1e-5

Shape = tuple[int, ...]
Reference = Callable[[list[torch.Tensor], dict[str, torch.Tensor]], torch.Tensor]


# -- network text ---------------------------------------------------------------------------
def node(nid: str, ntype: str, **config: Any) -> dict[str, Any]:
    """One entry of `nodes:`."""
    return {"id": nid, "type": ntype, "config": config}


def edge(src: str, dst: str, from_slot: int = 0, to_slot: int = 0) -> dict[str, Any]:
    """One entry of `edges:`."""
    return {"from": src, "to": dst, "from_slot": from_slot, "to_slot": to_slot}


def bind(name: str, node_id: str, slot: int = 0) -> dict[str, Any]:
    """One entry of `inputs:` / `outputs:` / `costs:`."""
    return {"name": name, "node_id": node_id, "slot_id": slot}


def network(nodes: Iterable[dict[str, Any]], edges: Iterable[dict[str, Any]], inputs: Iterable[dict[str, Any]],
            outputs: Iterable[dict[str, Any]] = (), costs: Iterable[dict[str, Any]] = (),
            **top: Any) -> NetworkSpec:
    """Validate a network written as YAML text (the way users submit it). The SPEC §6 passes are
    off (`fuse: false`): these tests check each node type as written (tests/runtime/test_fusion.py
    and tests/spec/test_passes.py check the fused graph)."""
    doc = {"name": "parity", "seed": 0, "fuse": False, **top, "nodes": list(nodes), "edges": list(edges),
           "inputs": list(inputs), "outputs": list(outputs), "costs": list(costs)}
    return dcnr.parse_network(yaml.safe_dump(doc, sort_keys=False))


# -- comparisons ----------------------------------------------------------------------------
def check_close(actual: torch.Tensor, expected: torch.Tensor, what: str = "",
                rtol: float = RTOL, atol: float = ATOL) -> None:
    """Elementwise |a - e| <= atol + rtol·|e|, and ‖a - e‖ / ‖e‖ <= rtol for the whole tensor."""
    actual, expected = actual.detach(), expected.detach()
    assert tuple(actual.shape) == tuple(expected.shape), f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")
    if expected.is_floating_point() and expected.numel():
        norm = float(expected.double().norm())
        if norm > 0:
            rel = float((actual.double() - expected.double()).norm()) / norm
            assert rel <= rtol, f"{what}: relative error {rel:.3g} > {rtol}"


def check_loss(actual: float, expected: torch.Tensor | float, what: str = "loss") -> None:
    """A scalar loss from `train_step` against the reference loss."""
    exp = float(expected.detach()) if isinstance(expected, torch.Tensor) else float(expected)
    assert math.isclose(actual, exp, rel_tol=RTOL, abs_tol=ATOL), f"{what}: {actual!r} != reference {exp!r}"


def check_grads(ex: LocalExecutor, leaves: Mapping[str, torch.Tensor], what: str = "") -> None:
    """Every runtime gradient equals the reference leaf's `.grad` (zeros where the reference got none)."""
    grads = ex.gradients()
    assert set(grads) == set(leaves), f"{what}: parameters {sorted(grads)} != reference {sorted(leaves)}"
    for name, leaf in leaves.items():
        ref = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        check_close(grads[name], ref, f"{what} grad {name}")


def make_leaves(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Independent fp32 copies of the parameters that record gradients."""
    return {k: v.detach().clone().float().requires_grad_() for k, v in params.items()}


def local(leaves: Mapping[str, torch.Tensor], node_id: str) -> dict[str, torch.Tensor]:
    """The parameters of one node by local name (`q.weight`, `bias`, ...)."""
    prefix = node_id + "."
    return {k[len(prefix):]: v for k, v in leaves.items() if k.startswith(prefix)}


def mse(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reference mean squared error, written out."""
    return ((y - target) ** 2).sum() / y.numel()


def randomize(ex: LocalExecutor, seed: int, scale: float = 0.5, sources: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Load seeded random values into every parameter (N(0,1) for sources, N(0, scale²) otherwise)."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, value in sorted(ex.parameters().items()):
        s = 1.0 if name.split(".", 1)[0] in sources else scale
        params[name] = torch.randn(value.shape, generator=gen) * s
    ex.load_parameters(params)
    return params


# -- the standard parity run ------------------------------------------------------------------
def source_nodes(in_shapes: Sequence[Shape], batch: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                   list[dict[str, Any]], list[str]]:
    """Nodes, edges and inputs of the per-slot sources; returns the ids whose output feeds slot i."""
    nodes, edges, inputs, tails = [], [], [], []
    for i, shape in enumerate(in_shapes):
        seq, rest = shape[0], shape[1:]
        dim = math.prod(rest)
        nodes.append(node(f"src{i}", "embedder", vocab_size=batch * seq, dim=dim, seq_len=seq,
                          position_encoding="none"))
        inputs.append(bind(f"ids{i}", f"src{i}"))
        tail = f"src{i}"
        if len(rest) > 1:
            nodes.append(node(f"src{i}_shape", "reshape", target_shape=list(shape)))
            edges.append(edge(tail, f"src{i}_shape"))
            tail = f"src{i}_shape"
        tails.append(tail)
    return nodes, edges, inputs, tails


def source_ids(in_shapes: Sequence[Shape], batch: int) -> dict[str, torch.Tensor]:
    return {f"ids{i}": torch.arange(batch * s[0]).reshape(batch, s[0]) for i, s in enumerate(in_shapes)}


def source_values(leaves: Mapping[str, torch.Tensor], in_shapes: Sequence[Shape], batch: int) -> list[torch.Tensor]:
    """The reference inputs of the node under test: each source's weight viewed as (batch, *shape)."""
    return [leaves[f"src{i}.weight"].view(batch, *shape) for i, shape in enumerate(in_shapes)]


@dataclass
class ParityRun:
    """What one parity run computed, for extra checks by the caller."""

    ex: LocalExecutor
    spec: NetworkSpec
    params: dict[str, torch.Tensor]
    leaves: dict[str, torch.Tensor]
    inputs: dict[str, torch.Tensor]
    y_ref: torch.Tensor
    loss: float


def run_parity(ntype: str, config: Mapping[str, Any], in_shapes: Sequence[Shape], reference: Reference, *,
               batch: int = 4, micro_batches: int = 1, seed: int = 0, scale: float = 0.5,
               params: Mapping[str, torch.Tensor] | None = None) -> ParityRun:
    """sources -> node `n` (the node under test) -> mse cost; values and every gradient vs `reference`.

    `reference(xs, p)` gets the node's inputs (tensors with a batch axis) and its parameters by
    local name, all leaves of a plain PyTorch autograd graph, and returns the node's output.
    `params` optionally overrides some of the node's parameters (by local name).
    """
    nodes, edges, inputs, tails = source_nodes(in_shapes, batch)
    nodes.append(node("n", ntype, **config))
    edges += [edge(tail, "n", 0, i) for i, tail in enumerate(tails)]
    nodes.append(node("loss", "cost", cost_function="mse"))
    edges.append(edge("n", "loss", 0, 0))
    inputs.append(bind("target", "loss", 1))
    spec = network(nodes, edges, inputs, outputs=[bind("y", "n")], costs=[bind("loss", "loss")])
    ex = LocalExecutor(spec, seed=0)
    values = randomize(ex, seed, scale, sources=[f"src{i}" for i in range(len(in_shapes))])
    if params:
        values.update({f"n.{k}": v for k, v in params.items()})
        ex.load_parameters(values)

    leaves = make_leaves(values)
    y_ref = reference(source_values(leaves, in_shapes, batch), local(leaves, "n"))
    out_shape = spec.nodes["n"].output_shapes[0]
    assert out_shape is not None and tuple(y_ref.shape) == (batch, *out_shape), (y_ref.shape, out_shape)
    target = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(seed + 1))
    loss_ref = mse(y_ref, target)
    loss_ref.backward()

    ids = source_ids(in_shapes, batch)
    y = ex.forward(ids, outputs=["y"])["y"]
    check_close(y, y_ref, f"{ntype} forward")
    feed = {**ids, "target": target}
    loss = ex.train_step(feed, micro_batches=micro_batches, update=False)["loss"]
    check_loss(loss, loss_ref, f"{ntype} training loss")
    check_grads(ex, leaves, f"{ntype} (micro_batches={micro_batches})")
    return ParityRun(ex, spec, values, leaves, feed, y_ref.detach(), loss)


# -- fixtures ---------------------------------------------------------------------------------
class Kit:
    """The helpers above, handed to tests through the `kit` fixture."""

    RTOL = RTOL
    ATOL = ATOL
    node = staticmethod(node)
    edge = staticmethod(edge)
    bind = staticmethod(bind)
    network = staticmethod(network)
    check_close = staticmethod(check_close)
    check_loss = staticmethod(check_loss)
    check_grads = staticmethod(check_grads)
    make_leaves = staticmethod(make_leaves)
    local = staticmethod(local)
    mse = staticmethod(mse)
    randomize = staticmethod(randomize)
    run_parity = staticmethod(run_parity)
    source_nodes = staticmethod(source_nodes)
    source_ids = staticmethod(source_ids)
    source_values = staticmethod(source_values)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    """Network builders, the parity runner and the strict comparisons."""
    return Kit


@pytest.fixture(params=[1, 2], ids=lambda m: f"mb{m}")
def micro_batches(request: pytest.FixtureRequest) -> int:
    """Every parity test runs with one and with two micro-batches (same full-batch reference)."""
    return int(request.param)
