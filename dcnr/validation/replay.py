"""Deterministic re-execution of one work unit: what a verifier runs.

A work unit is the part one tie group of VNodes (usually one VNode) played in one training
step: the forward of every micro-batch, the backward, and the update. Given the state the
unit's host committed to before the step and the inputs it committed to receiving, the
unit is built from the network's definition (only its VNodes), loaded with that state and
driven through the same shared `Router` a PNode uses; the digests of everything it emits
and of its state after the update are what its host must have committed to. Execution is
bit-exact on the same compute class (SPEC §2), so any difference is a fault.

A verifier of another compute class (`Replay.tolerance` > 0) cannot match bits. It first
gives `linear` VNodes Freivalds' check (`dcnr.validation.freivalds`): the products behind
every hop the host says it sent are checked against its state and inputs, and a unit that
fails is answered at once (its hop's digest is then `FREIVALDS_FAILED`) without
re-executing the rest. Then it answers with the host's digest for each hop it recomputes
within the tolerance, with its own for the others; costs and the state after the update
are left out of its answer. (On the same class the bit-exact replay decides alone: on a
CPU, at the shapes of SPEC §13's topologies, the check costs about as much as the product
it checks — benchmarks/bench_validation.py.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any

import torch

from dcnr.data.vocabularies import Vocabularies
from dcnr.errors import InvalidArgument, NotFound
from dcnr.runtime.executor import build_vnodes
from dcnr.runtime.router import Router
from dcnr.runtime.vnode import StepClock
from dcnr.spec.loader import parse_stored_network
from dcnr.spec.passes import ExecutionPlan, plan
from dcnr.transport.messages import Commitment, Hop, Replay, Report
from dcnr.validation.digest import hop_key, state_digest, value_digest
from dcnr.validation.freivalds import check_linear, check_linear_backward

FREIVALDS_FAILED = "freivalds-check-failed"  # the digest a verifier answers for a hop that fails Freivalds' check


_PLANS: OrderedDict[tuple[str, str], ExecutionPlan] = OrderedDict()  # (network, YAML) -> its plan, newest last
_PLANS_LOCK = threading.Lock()
PLAN_MEMORY = 4  # networks whose plans a verifier keeps: parsing one costs more than re-executing a small unit


def _plan(network: str, yaml_text: str) -> ExecutionPlan:
    with _PLANS_LOCK:
        found = _PLANS.get((network, yaml_text))
        if found is not None:
            _PLANS.move_to_end((network, yaml_text))
            return found
    found = plan(parse_stored_network(yaml_text, network))
    with _PLANS_LOCK:
        _PLANS[(network, yaml_text)] = found
        while len(_PLANS) > PLAN_MEMORY:
            _PLANS.popitem(last=False)
    return found


def replay(unit: Replay, device: str | torch.device = "cpu") -> dict[str, Commitment]:
    """Run `unit` and return, per VNode, the digests of what it sent and of its state after the update."""
    executed = _plan(unit.network, unit.yaml)
    spec = executed.spec
    vnodes = set(unit.vnodes)
    unknown = sorted(vnodes - set(spec.nodes))
    if unknown:
        raise InvalidArgument(f"network {unit.network!r} has no VNode {unknown[0]!r}")
    group = set().union(*(spec.tie_group(v) for v in vnodes))
    if group != vnodes:
        raise InvalidArgument(f"a work unit holds whole tie groups: {sorted(group - vnodes)[0]!r} belongs with it")

    def stored(name: str) -> str:
        found = unit.vocabularies.get(name)
        if found is None:
            raise NotFound(f"vocabulary {name!r} did not come with the work unit")
        return found

    clock = StepClock(unit.run.step)
    built = build_vnodes(executed, unit.seed, torch.device(device), only=vnodes,
                         vocabularies=Vocabularies(stored, files=False), clock=clock,
                         initial=not vnodes <= set(unit.evidence.state))  # the seed's values only when used
    for vid, v in built.items():  # a VNode with no state given starts from the seed's initial parameters
        if vid in unit.evidence.state:
            v.load_state(dict(unit.evidence.state[vid]), unit.run.step)
    router = Router(spec)
    claimed = {hop_key(h.micro_batch, h.op, h.vnode, h.index): h.value for h in unit.evidence.outputs}
    failed = _freivalds(unit, spec, router, built, claimed) if unit.tolerance else None
    if failed is not None:
        vnode, key = failed
        return {vid: Commitment(vid, "", {key: FREIVALDS_FAILED} if vid == vnode else {}) for vid in built}
    sent: dict[str, dict[str, str]] = {v: {} for v in vnodes}
    values: dict[str, Any] = {}
    strangers = sorted({h.vnode for h in unit.evidence.inputs} - vnodes)
    if strangers:
        raise InvalidArgument(f"an input of the work unit is addressed to VNode {strangers[0]!r}, not in it")
    # hops between the unit's own VNodes are recomputed, never taken from the evidence; forward hops go
    # first (a gradient needs its micro-batch's forward), each phase in a fixed order. The result does not
    # depend on the order: VNodes fire on complete inputs and add gradients in a fixed order
    outside = [h for h in unit.evidence.inputs if _origin(router, h) not in vnodes]
    ordered = sorted(outside, key=lambda h: (h.op != "fwd", h.micro_batch, h.vnode, h.index))
    queue: deque[Hop] = deque(ordered)
    with torch.no_grad():
        while queue:
            hop = queue.popleft()
            for msg in router.deliver(built[hop.vnode], unit.run, hop):
                if isinstance(msg, Report):
                    if msg.kind == "output" and not unit.tolerance:
                        sent[hop.vnode][hop_key(msg.micro_batch, "out", msg.vnode, msg.slot)] = value_digest(msg.value)
                    continue
                key = hop_key(msg.micro_batch, msg.op, msg.vnode, msg.index)
                sent[hop.vnode][key] = value_digest(msg.value)
                values[key] = msg.value
                if msg.vnode in vnodes:
                    queue.append(msg)
        for v in built.values():
            v.apply_update(unit.loss_scale, unit.apply)
    if unit.tolerance:  # another compute class: close enough is the same, the state cannot be compared
        for mine in sent.values():
            for key in mine:
                if key in claimed and _close(values[key], claimed[key], unit.tolerance):
                    mine[key] = value_digest(claimed[key])
        return {vid: Commitment(vid, "", sent[vid]) for vid in built}
    return {vid: Commitment(vid, state_digest(v.state(copy=False)), sent[vid]) for vid, v in built.items()}


def _close(mine: Any, theirs: Any, tolerance: float) -> bool:
    if not isinstance(mine, torch.Tensor) or not isinstance(theirs, torch.Tensor):
        return bool(mine == theirs)
    if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
        return False
    if not mine.is_floating_point():
        return torch.equal(mine, theirs)
    return torch.allclose(mine.double(), theirs.double(), rtol=tolerance, atol=tolerance)


def _freivalds(unit: Replay, spec: Any, router: Router, built: dict[str, Any], claimed: dict[str, Any]
               ) -> tuple[str, str] | None:
    """(VNode, hop key) of the first hop a `linear` VNode of the unit sent that is not the product of its
    state and inputs, by Freivalds' check; None when all pass."""
    generator = torch.Generator().manual_seed(0x5EED)  # the verifier's own: the host never sees it
    inputs = {hop_key(h.micro_batch, h.op, h.vnode, h.index): h.value for h in unit.evidence.inputs}
    for vid, v in sorted(built.items()):
        if spec.nodes[vid].type != "linear":
            continue
        weight, bias = v.params["weight"].master, v.params["bias"].master if "bias" in v.params else None
        dtype = v.act_dtype
        outs = router.out_edges[vid]
        feed = router.feeds.get((vid, 0))
        for mb in range(unit.run.micro_batches):
            x = inputs.get(hop_key(mb, "fwd", vid, 0))
            for _, e in outs:
                key = hop_key(mb, "fwd", e.dst, e.dst_slot)
                if x is not None and key in claimed and isinstance(claimed[key], torch.Tensor) and not (
                        check_linear(x.to(dtype).float(), weight.to(v.param_dtype).float(),
                                     None if bias is None else bias.to(v.param_dtype).float(),
                                     claimed[key].float(), generator, dtype)):
                    return vid, key
            grads = [inputs.get(hop_key(mb, "bwd", vid, i)) for i, _ in outs]
            upstream = hop_key(mb, "bwd", router.edges[feed].src, feed) if feed is not None else ""
            present = [g for g in grads if isinstance(g, torch.Tensor)]
            if present and len(present) == len(grads) and isinstance(claimed.get(upstream), torch.Tensor):
                gy = present[0].float()
                for g in present[1:]:  # in edge order, as the VNode sums them
                    gy = gy + g.float()
                if not check_linear_backward(gy, weight.to(v.param_dtype).float(), claimed[upstream].float(),
                                             generator, dtype):
                    return vid, upstream
    return None


def _origin(router: Router, hop: Hop) -> str | None:
    """The VNode at the other end of a hop's edge (None for a network input)."""
    if hop.op == "fwd":
        edge = router.feeds.get((hop.vnode, hop.index))
        return router.edges[edge].src if edge is not None else None
    if not 0 <= hop.index < len(router.edges):
        raise InvalidArgument(f"edge {hop.index} of the work unit's network does not exist")
    return router.edges[hop.index].dst
