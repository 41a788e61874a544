"""Commitments and re-execution on their own: two PNode runtimes on an in-process fabric train committed
steps; a verifier's replay of each unit from its host's evidence reproduces the host's commitments bit for
bit, a lie anywhere shows, and the validator pins a hop's disagreement on whoever cannot back its word."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pnode_doubles import RecordingLink

import dcnr
from dcnr.errors import PermissionDenied
from dcnr.orchestrator.fleet import Deployment
from dcnr.orchestrator.store import PNodeRecord
from dcnr.orchestrator.validator import Validator
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.runtime.router import Router
from dcnr.spec.passes import plan
from dcnr.spec.transformer import transformer_lm
from dcnr.transport.memory import MemoryFabric, MemoryHopTransport
from dcnr.transport.messages import Commitment, Hop, Placement, Replay, Run, network_digest
from dcnr.validation.digest import hop_key, sign_hop, value_digest
from dcnr.validation.freivalds import check_linear
from dcnr.validation.replay import FREIVALDS_FAILED, replay

TEXT = yaml.safe_dump(transformer_lm("cm", blocks=1, heads=2, head_dim=4, dim=8, seq_len=6, vocab_size=30,
                                     dropout=0.1))
EXEC = plan(dcnr.parse_network(TEXT)).spec
ON_A = ("embedder", "lm_head", "loss", "b0_ln", "b0_att")  # the rest on b: hops cross both ways
ASSIGN = {nid: ("a" if nid.startswith(ON_A) else "b") for nid in EXEC.nodes}
KEYS = {p: ec.generate_private_key(ec.SECP256R1()) for p in "ab"}


def public_key_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture()
def pair() -> Iterator[dict[str, tuple[PNodeRuntime, RecordingLink]]]:
    fabric = MemoryFabric()
    made = {}
    for name in "ab":
        link = RecordingLink()
        key = KEYS[name]
        rt = PNodeRuntime(name, MemoryHopTransport(fabric), link,
                          signer=lambda n, r, k, d, key=key: sign_hop(key, n, r, k, d))
        fabric.attach(f"mem:{name}", rt)
        rt.start()
        made[name] = (rt, link)
    placement = Placement("cm", TEXT, 3, network_digest(TEXT), 1, 0, ASSIGN, {"a": "mem:a", "b": "mem:b"},
                          keys={p: public_key_der(k.public_key()) for p, k in KEYS.items()})
    for rt, _ in made.values():
        rt.place(placement)
    yield made
    for rt, _ in made.values():
        rt.stop()


def run_step(pair: dict[str, tuple[PNodeRuntime, RecordingLink]], step: int, micro_batches: int = 2,
             ) -> tuple[Run, dict[str, list[Commitment]], dict[str, str], dict[str, str]]:
    """One committed training step; returns the run, each PNode's commitments, the inputs' and costs' digests."""
    run = Run("cm", f"r{step}", step, "train", micro_batches, 1.0 / micro_batches, (), network_digest(TEXT), 1, True)
    for rt, _ in pair.values():
        rt.begin_run(run)
    router = Router(EXEC)
    sent = {}
    for mb in range(micro_batches):
        tokens = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(step * 10 + mb))
        for hop in router.inputs(run, mb, {"tokens": tokens, "targets": tokens}):
            sent[hop_key(mb, "fwd", hop.vnode, hop.index)] = value_digest(hop.value)
            pair[ASSIGN[hop.vnode]][0].submit(hop)
    deadline = time.monotonic() + 60
    while sum(1 for _, link in pair.values() for r in link.reports if r.kind == "done" and r.run == run.id) < \
            2 * micro_batches:
        assert time.monotonic() < deadline, "the step did not finish"
        time.sleep(0.02)
    reported = {hop_key(r.micro_batch, "out", r.vnode, r.slot): value_digest(r.value)
                for _, link in pair.values() for r in link.reports if r.kind == "output" and r.run == run.id}
    commitments = {name: rt.apply_update("cm", step + 1, 1.0, True)[1] for name, (rt, _) in pair.items()}
    return run, commitments, sent, reported


def units(commitments: dict[str, list[Commitment]]) -> list[tuple[str, tuple[str, ...]]]:
    out, seen = [], set()
    for host, cs in sorted(commitments.items()):
        for c in cs:
            if c.vnode not in seen and (c.sent or c.received):
                group = tuple(sorted(EXEC.tie_group(c.vnode)))
                seen.update(group)
                out.append((host, group))
    return out


def test_replaying_each_unit_from_its_evidence_reproduces_its_commitments(pair: Any) -> None:
    """Two steps (the second from the state the first left), with dropout and two micro-batches."""
    for step in range(2):
        run, commitments, _, _ = run_step(pair, step)
        by_vnode = {c.vnode: c for cs in commitments.values() for c in cs}
        found = units(commitments)
        assert {h for h, _ in found} == {"a", "b"} and len(found) >= 6
        for host, group in found:
            evidence = pair[host][0].collect_evidence("cm", run.id, list(group))
            unit = Replay("cm", TEXT, 3, {}, group, run, 1.0, True, evidence)
            answer = replay(unit)
            for v in group:
                assert answer[v].sent == by_vnode[v].sent, v
                assert answer[v].state == by_vnode[v].state, v


def test_a_lie_in_a_hop_a_state_or_a_linear_product_shows(pair: Any) -> None:
    run, commitments, _, _ = run_step(pair, 0)
    by_vnode = {c.vnode: c for cs in commitments.values() for c in cs}
    linear = next(v for v in EXEC.nodes if EXEC.nodes[v].type == "linear" and ASSIGN[v] == "b")
    evidence = pair["b"][0].collect_evidence("cm", run.id, [linear])
    honest = Replay("cm", TEXT, 3, {}, (linear,), run, 1.0, True, evidence)
    assert replay(honest)[linear].sent == by_vnode[linear].sent

    # across compute classes, a claimed output that is not the product of the state and the input fails
    # Freivalds' check first
    out = next(h for h in evidence.outputs if h.op == "fwd")
    bent = dataclasses.replace(out, value=out.value + 1e-3)
    lied = dataclasses.replace(evidence, outputs=[bent if h is out else h for h in evidence.outputs])
    answer = replay(dataclasses.replace(honest, evidence=lied, tolerance=1e-4))
    assert FREIVALDS_FAILED in answer[linear].sent.values()
    assert replay(dataclasses.replace(honest, evidence=lied))[linear].sent == by_vnode[linear].sent  # bit for bit

    # another state than the one the step began from changes the answer
    state = {k: t + 1e-6 if k.startswith("param/") else t for k, t in evidence.state[linear].items()}
    other = dataclasses.replace(evidence, state={linear: state})
    assert replay(dataclasses.replace(honest, evidence=other))[linear].state != by_vnode[linear].state

    # across compute classes: within the tolerance the host's digests come back, beyond it not; no state
    close = replay(dataclasses.replace(honest, tolerance=1e-4))[linear]
    assert close.state == "" and close.sent == {k: d for k, d in by_vnode[linear].sent.items() if "/out/" not in k}


def test_freivalds_passes_honest_products_and_catches_small_errors() -> None:
    g = torch.Generator().manual_seed(1)
    for m, k, n in [(3, 5, 7), (64, 512, 128), (256, 64, 2048)]:
        x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * 0.05, torch.randn(n, generator=g)
        y = torch.nn.functional.linear(x, w, b)
        assert check_linear(x, w, b, y, g)
        assert not check_linear(x, w, b, y + 1e-3 * torch.randn(y.shape, generator=g), g)
        assert not check_linear(x, w, b, y * (1 + 1e-4), g)
        for dtype in (torch.float16, torch.bfloat16):
            assert check_linear(x.to(dtype), w.to(dtype), b.to(dtype),
                                torch.nn.functional.linear(x.to(dtype), w.to(dtype), b.to(dtype)), g, dtype)


def test_a_hop_not_signed_by_its_sender_is_refused(pair: Any) -> None:
    rt = pair["b"][0]
    run = Run("cm", "r0", 0, "train", 1, 1.0, (), network_digest(TEXT), 1, True)
    rt.begin_run(run)
    edge = next(i for i, e in enumerate(EXEC.edges) if ASSIGN[e.src] == "a" and ASSIGN[e.dst] == "b")
    e = EXEC.edges[edge]
    shape = [2, 6, 8]
    value = torch.zeros(shape)
    key = hop_key(0, "fwd", e.dst, e.dst_slot)
    forged = sign_hop(KEYS["b"], "cm", "r0", key, value_digest(value))  # signed, but not by its sender
    with pytest.raises(PermissionDenied, match="not signed by PNode a"):
        rt.submit(Hop("cm", "r0", 0, "fwd", e.dst, e.dst_slot, value, "a", forged))


class _Fleet:
    """What the validator reads of the fleet in the cross-check: PNode records with their keys."""

    def __init__(self) -> None:
        records = {p: PNodeRecord(p, f"mem:{p}", {"public_key": public_key_der(k.public_key()).hex()})
                   for p, k in KEYS.items()}
        self.store = SimpleNamespace(get_pnode=records.__getitem__)


def cross_check(run: Run, commitments: dict[str, list[Commitment]], sent: dict[str, str],
                reported: dict[str, str]) -> list[tuple[str, str]]:
    validator = Validator(_Fleet(), SimpleNamespace())  # type: ignore[arg-type]
    deployment = Deployment(1, network_digest(TEXT), ASSIGN, {"a": "mem:a", "b": "mem:b"})
    try:
        return validator._cross_check(EXEC, Router(EXEC), run, deployment, commitments, sent, reported)
    finally:
        validator.close()


def tamper(commitments: dict[str, list[Commitment]], host: str, change: Callable[[Commitment], Commitment | None]
           ) -> dict[str, list[Commitment]]:
    out = dict(commitments)
    out[host] = [c2 for c in commitments[host] if (c2 := change(c)) is not None]
    return out


def test_the_cross_check_pins_a_disagreement_on_whoever_cannot_back_it(pair: Any) -> None:
    run, commitments, sent, reported = run_step(pair, 0)
    assert cross_check(run, commitments, sent, reported) == []
    remote = next((c.vnode, k) for c in commitments["b"] for k, r in c.received.items() if r.sender == "a")
    vnode, key = remote
    origin = next(c.vnode for c in commitments["a"] if key in c.sent)

    # the sender committed another value than the one it signed and sent: its own signature convicts it
    lying_sender = tamper(commitments, "a", lambda c: dataclasses.replace(
        c, sent={**c.sent, key: "0" * 64}) if c.vnode == origin else c)
    assert cross_check(run, lying_sender, sent, reported) == [
        ("a", f"PNode a signed hop {key} as one value and committed another")]

    # the receiver claims another value than it was sent: no signature of the sender covers it
    lying_receiver = tamper(commitments, "b", lambda c: dataclasses.replace(c, received={
        **c.received, key: dataclasses.replace(c.received[key], digest="1" * 64)}) if c.vnode == vnode else c)
    assert cross_check(run, lying_receiver, sent, reported) == [
        ("b", f"PNode b claims hop {key} from PNode a without its signature")]

    # a receiver leaving out a hop it got, a cost reported otherwise than committed, a forged network input
    silent = tamper(commitments, "b", lambda c: dataclasses.replace(
        c, received={k: r for k, r in c.received.items() if k != key}) if c.vnode == vnode else c)
    assert cross_check(run, silent, sent, reported) == [("b", f"PNode b did not commit hop {key}, which PNode a sent")]
    cost = next(iter(reported))
    assert [w for w, _ in cross_check(run, commitments, sent, {cost: "2" * 64})] == [ASSIGN[cost.split("/")[2]]]
    first_input = next(iter(sent))
    assert [w for w, _ in cross_check(run, commitments, {**sent, first_input: "3" * 64}, reported)] == [
        ASSIGN[first_input.split("/")[2]]]


class ForgetfulLink(RecordingLink):
    """Keeps what the orchestrator keeps of a reported value over gRPC: its digest, never the tensor itself."""

    def __init__(self) -> None:
        super().__init__()
        self.digests: dict[str, str] = {}

    def report(self, pnode: str, reports: Any) -> None:
        for r in reports:
            if r.kind == "output":
                self.digests[hop_key(r.micro_batch, "out", r.vnode, r.slot)] = value_digest(r.value)
            self.reports.append(dataclasses.replace(r, value=None))


def test_each_reported_cost_is_committed_as_reported_when_its_memory_is_reused() -> None:
    """A PNode reporting its costs keeps no reference to them once sent; the next micro-batch's cost may get
    the same memory. Its commitment must still name each cost's own digest (a stale one quarantined honest
    PNodes in a fault test)."""
    fabric = MemoryFabric()
    link = ForgetfulLink()
    rt = PNodeRuntime("a", MemoryHopTransport(fabric), link)
    fabric.attach("mem:a", rt)
    rt.start()
    try:
        rt.place(Placement("cm", TEXT, 3, network_digest(TEXT), 1, 0, dict.fromkeys(EXEC.nodes, "a"), {"a": "mem:a"}))
        router = Router(EXEC)
        for step in range(4):
            run = Run("cm", f"r{step}", step, "train", 8, 1.0 / 8, (), network_digest(TEXT), 1, True)
            rt.begin_run(run)
            for mb in range(8):
                tokens = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(step * 10 + mb))
                for hop in router.inputs(run, mb, {"tokens": tokens, "targets": tokens}):
                    rt.submit(hop)
            deadline = time.monotonic() + 60
            while sum(1 for r in link.reports if r.kind == "done" and r.run == run.id) < 8:
                assert time.monotonic() < deadline, "the step did not finish"
                time.sleep(0.02)
            committed = {k: d for c in rt.apply_update("cm", step + 1, 1.0, True)[1] for k, d in c.sent.items()
                         if "/out/" in k}
            assert committed == {k: d for k, d in link.digests.items() if k in committed} and len(committed) == 8
    finally:
        rt.stop()
