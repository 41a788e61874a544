"""Where each VNode runs: capability-, load- and locality-aware placement (SPEC §8).

Placement works on *units*: VNodes that must share a PNode — a `colocate_group`
with `colocate_policy: required`, and every node tied to a weight together with
its publisher. Each PNode gets a fair share of the network's work (estimated
memory as the proxy), in proportion to its budget and less when it reports load.
Units are visited in topological order; each goes to the PNode that hosts its
upstream neighbour while that PNode is within its share (activations stay
in-process; a unit without parameters always stays), otherwise to the PNode
furthest below its share that has room, so consecutive stages land on different
PNodes and pipeline. Memory is checked
against each PNode's declared budget. The result depends only on the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcnr.errors import ResourceExhausted
from dcnr.runtime.memory import estimate_vnode_memory
from dcnr.spec.model import NetworkSpec

LOCALITY_SLACK = 0.25  # stay with the upstream PNode until it holds 1.25 × its fair share of the work


class PlacementError(ResourceExhausted):
    """No PNode can take a unit of VNodes (answered as RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class PNodeCapacity:
    id: str
    memory_budget: int  # bytes the PNode offers for hosted VNodes
    used: int = 0  # bytes already taken by VNodes of other networks
    load: float = 0.0  # reported load (running tasks / threads)


def units(spec: NetworkSpec) -> list[list[str]]:
    """Groups of node ids that must share a PNode, in topological order of their first member."""
    parent = {nid: nid for nid in spec.nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    groups: dict[str, str] = {}
    for nid, node in spec.nodes.items():
        cfg = node.config
        if cfg.colocate_group and cfg.colocate_policy == "required":
            union(nid, groups.setdefault(cfg.colocate_group, nid))
        for other in spec.tie_group(nid):
            union(nid, other)
    order = {nid: i for i, nid in enumerate(spec.topo_order)}
    members: dict[str, list[str]] = {}
    for nid in spec.topo_order:
        members.setdefault(find(nid), []).append(nid)
    return sorted(members.values(), key=lambda m: order[m[0]])


def place(spec: NetworkSpec, pnodes: list[PNodeCapacity], existing: dict[str, str] | None = None,
          batch_size: int = 8) -> dict[str, str]:
    """Map every VNode id to a PNode id. `existing` placements on listed PNodes are kept."""
    if not pnodes:
        raise PlacementError(f"network {spec.name!r}: no live PNode to place its VNodes on")
    free = {p.id: p.memory_budget - p.used for p in pnodes}
    memory = {nid: estimate_vnode_memory(node, batch_size) for nid, node in spec.nodes.items()}
    # each PNode's fair share of this network's work: by budget, less for busy PNodes
    weight = {p.id: max(1, p.memory_budget) / (1.0 + max(0.0, p.load)) for p in pnodes}
    total = sum(memory.values())
    fair = {pid: max(1.0, total * w / sum(weight.values())) for pid, w in weight.items()}
    work = dict.fromkeys(free, 0)
    result: dict[str, str] = {}
    kept = {v: p for v, p in (existing or {}).items() if p in free and v in spec.nodes}
    upstream = {nid: [e.src for e in spec.in_edges(nid)] for nid in spec.nodes}
    stays: dict[int, str] = {}  # units that keep their PNode: their memory is taken before anything moves
    for i, unit in enumerate(units(spec)):
        sticky = {kept[n] for n in unit if n in kept}
        if len(sticky) == 1:
            stays[i] = sticky.pop()
            free[stays[i]] -= sum(memory[n] for n in unit)
            work[stays[i]] += sum(memory[n] for n in unit)
    for i, unit in enumerate(units(spec)):
        need = sum(memory[n] for n in unit)
        if i in stays:
            for n in unit:
                result[n] = stays[i]
            continue
        fits = sorted(pid for pid in free if free[pid] >= need)
        if not fits:
            best = max(free.values())
            raise PlacementError(
                f"network {spec.name!r}: VNodes {', '.join(unit[:4])}{' …' if len(unit) > 4 else ''} need "
                f"{need / 2**20:.1f} MiB together; the PNode with most room has {max(best, 0) / 2**20:.1f} MiB")

        def share(pid: str, need: int = need) -> float:
            return (work[pid] + need) / fair[pid]

        target = min(fits, key=lambda pid: (share(pid), pid))
        stateless = not any(spec.nodes[n].impl.param_shapes() for n in unit)
        for pid in (result[s] for n in unit for s in upstream[n] if s in result):
            if pid in fits and (stateless or share(pid) <= 1.0 + LOCALITY_SLACK):
                # stay with the upstream neighbour: activations stay in-process; a VNode without
                # parameters always does (moving it would only add traffic)
                target = pid
                break
        for n in unit:
            result[n] = target
        free[target] -= need
        work[target] += need
    return result
