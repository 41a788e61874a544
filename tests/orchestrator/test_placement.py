"""Placement: colocation and ties honoured, budgets respected, load spread, locality kept."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import dcnr
from dcnr.orchestrator.placement import PlacementError, PNodeCapacity, place, units
from dcnr.runtime.memory import estimate_vnode_memory

NETWORKS = Path(__file__).resolve().parents[2] / "examples" / "networks"
GiB = 2**30


@pytest.fixture(scope="module")
def topo1() -> dcnr.NetworkSpec:
    return dcnr.load_network(NETWORKS / "topology1.yml")


def test_units_follow_required_groups_and_ties(topo1: dcnr.NetworkSpec) -> None:
    groups = units(topo1)
    by_node = {n: i for i, g in enumerate(groups) for n in g}
    for b in range(6):
        members = [n for n in topo1.nodes if n.startswith(f"b{b}_")]
        assert len({by_node[n] for n in members}) == 1
    assert by_node["embedder"] == by_node["lm_head"]  # tied weight, and group token_embedding
    assert sorted(n for g in groups for n in g) == sorted(topo1.nodes)


def test_memory_estimate_counts_master_grad_adam_and_fp16_copy(topo1: dcnr.NetworkSpec) -> None:
    node = topo1.nodes["b0_fc1"]  # linear 512 -> 2048, fp16 params, adam
    params = 512 * 2048 + 2048
    activations = 8 * 2 * (128 * 512 + 128 * 2048)
    assert estimate_vnode_memory(node, batch_size=8) == params * (4 * 4 + 2) + activations
    assert estimate_vnode_memory(topo1.nodes["lm_head"]) < estimate_vnode_memory(topo1.nodes["embedder"])


def test_two_equal_pnodes_share_the_blocks(topo1: dcnr.NetworkSpec) -> None:
    placed = place(topo1, [PNodeCapacity("a", 4 * GiB), PNodeCapacity("b", 4 * GiB)])
    assert set(placed) == set(topo1.nodes)
    per_block = {b: {placed[n] for n in topo1.nodes if n.startswith(f"b{b}_")} for b in range(6)}
    assert all(len(p) == 1 for p in per_block.values())
    counts = Counter(next(iter(p)) for p in per_block.values())
    assert set(counts) == {"a", "b"}  # both PNodes work
    assert placed["embedder"] == placed["lm_head"]
    assert place(topo1, [PNodeCapacity("a", 4 * GiB), PNodeCapacity("b", 4 * GiB)]) == placed  # deterministic


def test_budgets_are_respected_and_refusal_is_clear(topo1: dcnr.NetworkSpec) -> None:
    memory = {n: estimate_vnode_memory(node) for n, node in topo1.nodes.items()}
    pnodes = [PNodeCapacity(f"p{i}", 320 * 2**20) for i in range(4)]
    placed = place(topo1, pnodes)
    used = Counter()
    for n, p in placed.items():
        used[p] += memory[n]
    assert all(used[p.id] <= p.memory_budget for p in pnodes)
    with pytest.raises(PlacementError, match=r"need [0-9.]+ MiB together"):
        place(topo1, [PNodeCapacity("tiny", 10 * 2**20)])
    with pytest.raises(PlacementError, match="no live PNode"):
        place(topo1, [])


def test_locality_keeps_a_chain_on_one_pnode_when_it_fits() -> None:
    spec = dcnr.load_network(NETWORKS / "tiny_lm.yml")
    placed = place(spec, [PNodeCapacity("a", 8 * GiB), PNodeCapacity("b", 8 * GiB)])
    # small units follow their upstream neighbour instead of bouncing between PNodes
    assert placed["ln_f"] == placed["head_up"] == placed["head_swiglu"] == placed["head_down"]


def test_busy_pnodes_get_less_and_existing_placements_stay(topo1: dcnr.NetworkSpec) -> None:
    placed = place(topo1, [PNodeCapacity("idle", 4 * GiB), PNodeCapacity("busy", 4 * GiB, load=5.0)])
    assert Counter(placed.values())["idle"] > Counter(placed.values()).get("busy", 0)
    again = place(topo1, [PNodeCapacity("idle", 4 * GiB), PNodeCapacity("new", 4 * GiB)], existing=placed)
    assert all(again[n] == "idle" for n, p in placed.items() if p == "idle")


def test_replacing_a_lost_pnode_never_overcommits_the_survivors() -> None:
    """VNodes that stay put take their memory first: moved ones only go where room is left, else refusal."""
    spec = dcnr.parse_network((Path(__file__).resolve().parents[2] / "examples/networks/tiny_lm.yml").read_text())
    memory = {n: estimate_vnode_memory(node, 2) for n, node in spec.nodes.items()}
    budget = int(sum(memory.values()) * 0.45)  # three hold the network, two cannot
    caps = [PNodeCapacity(f"p{i}", budget) for i in range(3)]
    first = place(spec, caps, None, 2)
    for pid in ("p0", "p1", "p2"):
        assert sum(memory[v] for v, p in first.items() if p == pid) <= budget
    kept = {v: p for v, p in first.items() if p != "p1"}
    with pytest.raises(PlacementError, match="MiB"):
        place(spec, [caps[0], caps[2]], kept, 2)
    roomy = [PNodeCapacity("p0", budget * 2), PNodeCapacity("p2", budget * 2)]
    again = place(spec, roomy, kept, 2)
    assert all(again[v] == p for v, p in kept.items())  # survivors keep what they hold
    for pid in ("p0", "p2"):
        assert sum(memory[v] for v, p in again.items() if p == pid) <= budget * 2
