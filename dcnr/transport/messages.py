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
from typing import Any, Literal

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
