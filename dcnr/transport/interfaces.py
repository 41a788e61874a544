"""The small interfaces the runtime needs from a transport, and nothing more.

- `PNodeClient`: what the orchestrator asks of one PNode (placement, runs, the end of a
  step, state), used by the driver, checkpoints and sessions;
- `HopTransport`: fire-and-forget delivery of hops to a PNode by address, used by PNodes
  (between VNodes) and by the driver (network inputs);
- `OrchestratorLink`: what a PNode asks of the orchestrator (membership, reports, blobs);
- `Connector`: how the orchestrator gets a `PNodeClient` for an address;
- `MembershipService`: what the orchestrator does for PNodes that join, beat, leave and report.

gRPC implements them in `dcnr.transport.grpc`, an in-process fabric in
`dcnr.transport.memory` (fast tests), and `dcnr.transport.shaping` wraps any
`HopTransport` with per-link latency, bandwidth and jitter. Failures are `dcnr.errors`
classes: `Unavailable` / `DeadlineExceeded` when a peer cannot be reached in time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from dcnr.transport.messages import (
    Commitment,
    Evidence,
    Hop,
    LocalVNode,
    Membership,
    Placement,
    Replay,
    Report,
    Run,
    Updated,
)

SavedState = tuple[dict[str, torch.Tensor], int]  # a VNode's state tensors and its step


class PNodeClient(Protocol):
    """The orchestrator's handle on one PNode."""

    def place_network(self, placement: Placement) -> int:
        """Tell the PNode a network's definition and where every VNode lives; returns how many it hosts."""
        ...

    def begin_run(self, run: Run) -> None: ...

    def health(self, timeout: float) -> None:
        """Nothing if the PNode answers within `timeout` s (the orchestrator's probe at registration)."""
        ...

    def check_finite(self, network: str) -> bool:
        """Whether every accumulated gradient of the hosted VNodes is finite (fp16 loss scaling)."""
        ...

    def apply_update(self, network: str, step: int, loss_scale: float, apply: bool) -> Updated:
        """End the step: apply (or skip) each hosted VNode's optimizer; returns learning rates by VNode, after a
        committed run the PNode's commitments, and when its work of the step happened."""
        ...

    def collect_evidence(self, network: str, run: str, vnodes: Sequence[str]) -> Evidence:
        """The state and inputs of hosted VNodes in the committed run just updated (for re-execution)."""
        ...

    def verify(self, unit: Replay) -> dict[str, Commitment]:
        """Re-execute another PNode's work unit; returns what its VNodes must have committed to."""
        ...

    def reset_to_step(self, network: str, step: int, fence_run: str = "", reinitialize: bool = False) -> None:
        """Drop unfinished work and gradients, put the network at `step`, refuse `fence_run`'s late
        messages; with `reinitialize`, hosted VNodes are dropped and rebuilt from the seed when used."""
        ...

    def save(self, network: str, vnode: str) -> SavedState: ...

    def save_to_storage(self, network: str, vnode: str) -> tuple[str, int]:
        """The PNode writes the VNode's state as a blob through storage; returns (sha256, bytes)."""
        ...

    def load(self, network: str, vnode: str, step: int, tensors: dict[str, torch.Tensor]) -> None: ...

    def load_from_storage(self, network: str, vnode: str, step: int, digest: str) -> None: ...

    def list_vnodes(self, network: str = "") -> list[LocalVNode]: ...

    def drop(self, network: str, vnode: str = "") -> bool:
        """Drop one VNode, or (no VNode named) everything of the network."""
        ...

    def close(self) -> None: ...


class HopTransport(Protocol):
    """Delivers hops to the PNode listening at an address."""

    def send(self, address: str, hop: Hop, on_error: Callable[[Exception], None]) -> None:
        """Send without waiting; `on_error` is called (on another thread) if delivery fails."""
        ...

    def send_now(self, address: str, hop: Hop, timeout: float) -> None:
        """Send and wait for the receiver's acknowledgement (raises on failure)."""
        ...

    def close(self) -> None: ...


class OrchestratorLink(Protocol):
    """A PNode's handle on its orchestrator."""

    def register(self, member: Membership) -> float:
        """Join the fleet; returns the heartbeat interval in seconds. `Unreachable` when the orchestrator cannot
        reach the member's address (not registered: attach to a relay and register that address instead)."""
        ...

    def assign_relay(self, pnode: str, avoid: str = "") -> tuple[str, str]:
        """(relay id, host:port) to attach to, other than `avoid` if possible; an empty host means the
        orchestrator's."""
        ...

    def heartbeat(self, pnode: str, load: float, memory_used: int, vnodes: Sequence[str], refused: int) -> bytes:
        """A renewed certificate (PEM) when the current one is past half its life, else empty bytes;
        `NotFound` when the orchestrator forgot this PNode (it must register again)."""
        ...

    def unregister(self, pnode: str) -> None: ...

    def report(self, pnode: str, reports: Sequence[Report]) -> None: ...

    def put_blob(self, pnode: str, network: str, vnode: str, data: bytes) -> str:
        """Store a checkpoint blob of a VNode this PNode hosts; returns its sha256."""
        ...

    def get_blob(self, pnode: str, network: str, vnode: str, digest: str) -> bytes:
        """A blob a checkpoint names as the state of a VNode this PNode hosts, checked against its name
        (`DataLoss` otherwise)."""
        ...

    def close(self) -> None: ...


class MembershipService(Protocol):
    """What the orchestrator does for `NodeManagementService` (its fleet and inbox)."""

    heartbeat_interval: float

    def enroll(self, csr: bytes, role: str = "pnode") -> tuple[str, bytes]:
        """A certificate for a new key: (the PNode id derived from it, certificate PEM); `role` "relay" is for
        operators to decide (the caller checks)."""
        ...

    def probe(self, member: Membership) -> str:
        """Why the orchestrator cannot reach a registering PNode at its address ("" if it can)."""
        ...

    def register(self, member: Membership) -> None: ...

    def assign_relay(self, pnode: str, avoid: str = "") -> tuple[str, str]: ...
    def register_relay(self, relay: str, address: str) -> None: ...
    def heartbeat_relay(self, relay: str, attached: int, bytes_forwarded: int, hop_bytes: int = 0,
                        certificate: bytes = b"") -> bytes: ...
    def unregister(self, pnode: str) -> bool: ...

    def heartbeat(self, pnode: str, load: float, certificate: bytes = b"") -> bytes:
        """Record a beat; returns a renewed certificate for the one presented when it is past half its
        life, else empty bytes."""
        ...

    def deliver(self, pnode: str, reports: Sequence[Report]) -> None: ...


class Connector(Protocol):
    """Clients to PNodes by address, for the orchestrator."""

    def pnode(self, address: str) -> PNodeClient: ...

    def hops(self) -> HopTransport: ...

    def close(self) -> None: ...
