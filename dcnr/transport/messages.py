"""Domain messages of the step protocol, defined once and free of any wire format.

A **run** is one piece of work on one network: a training step (all its micro-batches),
an evaluation or an inference request. The orchestrator describes it once to every PNode
taking part (`Run`), then VNodes exchange `Hop`s (a value on an input slot, or a gradient
on an output edge) and PNodes tell the orchestrator what it waits for with `Report`s.
A network's definition and the whole placement reach a PNode with `Placement` before any
run uses them, so nothing is pulled in the middle of a step.

Values are torch tensors (or lists of strings for text nodes); the transport encodes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

RunKind = Literal["train", "eval", "infer"]
RUN_KINDS: tuple[str, ...] = ("train", "eval", "infer")


def network_digest(yaml_text: str) -> str:
    """The digest naming a network definition (sha256 of its YAML text)."""
    return hashlib.sha256(yaml_text.encode()).hexdigest()


@dataclass(frozen=True)
class Run:
    """One run as every PNode taking part knows it.

    `grad_scale` is each cost's initial gradient (loss scale / micro-batches); it comes
    from the orchestrator with the run, never from a peer's hop. `digest` and
    `placement_version` name the definition and placement the run was planned on: a PNode
    holding another refuses the run instead of computing on stale state.
    """

    network: str
    id: str
    step: int
    kind: RunKind
    micro_batches: int = 1
    grad_scale: float = 1.0
    outputs: tuple[str, ...] = ()  # infer: the network outputs wanted (empty: every output)
    digest: str = ""
    placement_version: int = 0
    commit: bool = False  # train: PNodes commit digests of what they send, receive and hold, and keep evidence


@dataclass
class Hop:
    """A value for input `index` of `vnode` (op "fwd"), or the gradient from output edge `index`
    of `vnode` (op "bwd", `value` None when that edge contributes zero), for one micro-batch."""

    network: str
    run: str
    micro_batch: int
    op: Literal["fwd", "bwd"]
    vnode: str
    index: int
    value: Any
    sender: str = ""  # the sending PNode ("" for the orchestrator's network inputs)
    signature: bytes = b""  # the sender's signature on (network, run, hop key, value digest), in committed runs
    digest: str = ""  # the value's digest, as its sender computed it (a receiver computes its own)


@dataclass(frozen=True)
class Report:
    """What a PNode tells the orchestrator about a run.

    - "output": `vnode` produced `value` on `slot`, which is bound to a network output or cost;
    - "done": every VNode of this PNode that takes part in the backward pass finished micro-batch
      `micro_batch` (one report per PNode per micro-batch);
    - "failed": `vnode` could not do its work; `error` says why.
    """

    kind: Literal["output", "done", "failed"]
    network: str
    run: str
    micro_batch: int
    vnode: str = ""
    slot: int = 0
    value: Any = None
    error: str = ""


@dataclass(frozen=True)
class Placement:
    """A network as the PNodes hosting it must know it: the definition, the seed its initial
    parameters derive from, and where every VNode lives (with the PNodes' addresses)."""

    network: str
    yaml: str
    seed: int
    digest: str
    version: int
    step: int
    assignments: dict[str, str]  # VNode id -> PNode id
    addresses: dict[str, str]  # PNode id -> host:port
    vocabularies: dict[str, str] = field(default_factory=dict)  # stored vocabulary id -> tokenizer JSON
    keys: dict[str, bytes] = field(default_factory=dict)  # PNode id -> public key (DER), to check hop signatures


@dataclass(frozen=True)
class Received:
    """One hop a VNode received in a committed run: its value's digest, who sent it ("" for the orchestrator,
    the receiving PNode itself for a colocated sender) and the sender's signature (remote hops)."""

    digest: str
    sender: str = ""
    signature: bytes = b""


@dataclass(frozen=True)
class Commitment:
    """What a PNode commits to for one hosted VNode after one committed training run: the digests of every
    hop it received and sent (by hop key, `dcnr.validation.digest.hop_key`; values reported to the
    orchestrator count as sent, op "out") and of its state after the update."""

    vnode: str
    state: str
    sent: dict[str, str] = field(default_factory=dict)
    received: dict[str, Received] = field(default_factory=dict)
    grad_norm: float = 0.0  # of the gradient it applied (a cheap outlier flag, never proof)


@dataclass(frozen=True)
class TimedWork:
    """A hosted VNode's forward or backward of one micro-batch, or its update ("update", micro-batch 0): seconds
    since its PNode received the run's BeginRun."""

    vnode: str
    op: Literal["fwd", "bwd", "update"]
    micro_batch: int
    start: float
    end: float


@dataclass(frozen=True)
class TimedHop:
    """A hop between two PNodes, as one of them saw it: when it left the sender or arrived at the receiver
    (seconds since that PNode received the run's BeginRun), the bytes of its value, and for an arrival the
    sending PNode (`peer`). `vnode`, `op`, `micro_batch` and `index` are the hop's own."""

    vnode: str
    op: Literal["fwd", "bwd"]
    micro_batch: int
    index: int
    at: float
    bytes: int
    peer: str = ""


@dataclass(frozen=True)
class StepTiming:
    """When one PNode's part of a training run happened, for the orchestrator's step timeline; `truncated` when
    more happened than the report holds."""

    run: str
    work: tuple[TimedWork, ...] = ()
    sent: tuple[TimedHop, ...] = ()
    received: tuple[TimedHop, ...] = ()
    truncated: bool = False


class Updated(NamedTuple):
    """A PNode's answer to the end of a step: learning rates by VNode, commitments (committed runs) and when
    its work of the step happened (None when it reports nothing)."""

    learning_rates: dict[str, float]
    commitments: list[Commitment]
    timing: StepTiming | None = None


@dataclass(frozen=True)
class Evidence:
    """What a PNode hands over for re-execution of some hosted VNodes' part in a committed run: each VNode's
    state when the run began, every hop it received and every hop it sent (with their values)."""

    state: dict[str, dict[str, Any]]  # VNode -> state tensors (as `VNode.state()`); absent: the seed's
    inputs: list[Hop] = field(default_factory=list)
    outputs: list[Hop] = field(default_factory=list)


@dataclass(frozen=True)
class Replay:
    """A work unit for a verifier: VNodes of one network (a tie group) to run through one training step from
    `evidence`, exactly as their host should have; `loss_scale` and `apply` end the step as the driver did.
    With a `tolerance` (a verifier of another compute class) a recomputed hop within it of the one the host
    sent (`evidence.outputs`) counts as the same."""

    network: str
    yaml: str
    seed: int
    vocabularies: dict[str, str]
    vnodes: tuple[str, ...]
    run: Run
    loss_scale: float
    apply: bool
    evidence: Evidence
    tolerance: float = 0.0  # 0: bit for bit


@dataclass(frozen=True)
class LocalVNode:
    """A VNode as its PNode describes it."""

    network: str
    vnode: str
    type: str
    step: int
    memory_bytes: int


@dataclass(frozen=True)
class Membership:
    """What a PNode tells the orchestrator when it registers."""

    id: str
    address: str
    hardware: dict[str, Any]
    version: str
    name: str = ""  # a label for people (the host name by default); the id is what identifies it
