"""Deterministic re-execution of one work unit: what a verifier runs.

A work unit is the part one tie group of VNodes (usually one VNode) played in one training
step: the forward of every micro-batch, the backward, and the update. Given the state the
unit's host committed to before the step and the inputs it committed to receiving, the
unit is built from the network's definition (only its VNodes), loaded with that state and
driven through the same shared `Router` a PNode uses; the digests of everything it emits
and of its state after the update are what its host must have committed to. Execution is
bit-exact on the same compute class (SPEC §2), so any difference is a fault.
"""

from __future__ import annotations

from collections import deque

import torch

from dcnr.data.vocabularies import Vocabularies
from dcnr.errors import InvalidArgument, NotFound
from dcnr.runtime.executor import build_vnodes
from dcnr.runtime.router import Router
from dcnr.runtime.vnode import StepClock
from dcnr.spec.loader import parse_stored_network
from dcnr.spec.passes import plan
from dcnr.transport.messages import Commitment, Hop, Replay, Report
from dcnr.validation.digest import hop_key, state_digest, value_digest


def replay(unit: Replay, device: str | torch.device = "cpu") -> dict[str, Commitment]:
    """Run `unit` and return, per VNode, the digests of what it sent and of its state after the update."""
    executed = plan(parse_stored_network(unit.yaml, unit.network))
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
                         vocabularies=Vocabularies(stored, files=False), clock=clock)
    for vid, v in built.items():  # a VNode with no state given starts from the seed's initial parameters
        if vid in unit.evidence.state:
            v.load_state(dict(unit.evidence.state[vid]), unit.run.step)
    router = Router(spec)
    sent: dict[str, dict[str, str]] = {v: {} for v in vnodes}
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
                    if msg.kind == "output":
                        sent[hop.vnode][hop_key(msg.micro_batch, "out", msg.vnode, msg.slot)] = value_digest(msg.value)
                    continue
                sent[hop.vnode][hop_key(msg.micro_batch, msg.op, msg.vnode, msg.index)] = value_digest(msg.value)
                if msg.vnode in vnodes:
                    queue.append(msg)
        for v in built.values():
            v.apply_update(unit.loss_scale, unit.apply)
    return {vid: Commitment(vid, state_digest(v.state()), sent[vid]) for vid, v in built.items()}


def _origin(router: Router, hop: Hop) -> str | None:
    """The VNode at the other end of a hop's edge (None for a network input)."""
    if hop.op == "fwd":
        edge = router.feeds.get((hop.vnode, hop.index))
        return router.edges[edge].src if edge is not None else None
    if not 0 <= hop.index < len(router.edges):
        raise InvalidArgument(f"edge {hop.index} of the work unit's network does not exist")
    return router.edges[hop.index].dst
