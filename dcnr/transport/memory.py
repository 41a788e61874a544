"""An in-process implementation of the transport interfaces, for fast tests.

A `MemoryFabric` stands for the network: PNode runtimes attach to it under an address,
and hops and calls go straight to them, with the same checks and the same errors as over
gRPC (an address nobody serves is `Unavailable`). Values are handed over as they are:
nothing is serialized, so tests exercise the protocol's logic without its wire format.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch

from dcnr.errors import DcnrError, NotFound, Unavailable, Unreachable
from dcnr.pnode.runtime import PNodeRuntime
from dcnr.storage import BlobStore
from dcnr.transport.interfaces import MembershipService, SavedState
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


class MemoryFabric:
    """PNode runtimes by address."""

    def __init__(self) -> None:
        self._runtimes: dict[str, PNodeRuntime] = {}
        self._lock = threading.Lock()
        self.hops_sent = 0

    def attach(self, address: str, runtime: PNodeRuntime) -> None:
        with self._lock:
            self._runtimes[address] = runtime

    def detach(self, address: str) -> None:
        """The PNode at `address` is gone: calls to it fail as to a dead machine."""
        with self._lock:
            self._runtimes.pop(address, None)

    def runtime(self, address: str) -> PNodeRuntime:
        with self._lock:
            found = self._runtimes.get(address)
        if found is None:
            raise Unavailable(f"nothing answers at {address}")
        return found


class MemoryHopTransport:
    """`HopTransport` within one process: a hop is checked and queued by the receiving runtime at once."""

    def __init__(self, fabric: MemoryFabric) -> None:
        self.fabric = fabric

    def send(self, address: str, hop: Hop, on_error: Callable[[Exception], None]) -> None:
        try:
            self.send_now(address, hop, timeout=0)
        except DcnrError as exc:
            on_error(exc)

    def send_now(self, address: str, hop: Hop, timeout: float) -> None:
        self.fabric.hops_sent += 1
        self.fabric.runtime(address).submit(hop)

    def close(self) -> None:
        """Nothing to release."""


class MemoryPNodeClient:
    """`PNodeClient` calling a runtime of this process."""

    def __init__(self, fabric: MemoryFabric, address: str) -> None:
        self.fabric = fabric
        self.address = address

    def _rt(self) -> PNodeRuntime:
        return self.fabric.runtime(self.address)

    def place_network(self, placement: Placement) -> int:
        return self._rt().place(placement)

    def begin_run(self, run: Run) -> None:
        self._rt().begin_run(run)

    def health(self, timeout: float) -> None:
        self._rt()  # Unavailable for an address nobody serves

    def check_finite(self, network: str) -> bool:
        return self._rt().check_finite(network)

    def apply_update(self, network: str, step: int, loss_scale: float, apply: bool) -> Updated:
        return self._rt().update(network, step, loss_scale, apply)

    def collect_evidence(self, network: str, run: str, vnodes: Sequence[str]) -> Evidence:
        return self._rt().collect_evidence(network, run, list(vnodes))

    def verify(self, unit: Replay) -> dict[str, Commitment]:
        return self._rt().verify(unit)

    def reset_to_step(self, network: str, step: int, fence_run: str = "", reinitialize: bool = False) -> None:
        self._rt().reset_to_step(network, step, fence_run, reinitialize)

    def save(self, network: str, vnode: str) -> SavedState:
        return self._rt().save(network, vnode)

    def save_to_storage(self, network: str, vnode: str) -> tuple[str, int]:
        return self._rt().save_to_storage(network, vnode)

    def load(self, network: str, vnode: str, step: int, tensors: dict[str, torch.Tensor]) -> None:
        self._rt().load(network, vnode, tensors, step)

    def load_from_storage(self, network: str, vnode: str, step: int, digest: str) -> None:
        self._rt().load_from_storage(network, vnode, step, digest)

    def list_vnodes(self, network: str = "") -> list[LocalVNode]:
        return self._rt().list_vnodes(network)

    def drop(self, network: str, vnode: str = "") -> bool:
        return self._rt().drop(network, vnode)

    def close(self) -> None:
        """Nothing to release."""


class MemoryConnector:
    """The orchestrator's `Connector` within one process."""

    def __init__(self, fabric: MemoryFabric) -> None:
        self.fabric = fabric
        self._hops = MemoryHopTransport(fabric)

    def pnode(self, address: str) -> MemoryPNodeClient:
        return MemoryPNodeClient(self.fabric, address)

    def hops(self) -> MemoryHopTransport:
        return self._hops

    def close(self) -> None:
        """Nothing to release."""


class MemoryOrchestratorLink:
    """A PNode's `OrchestratorLink` calling the orchestrator's membership service and blob store directly."""

    def __init__(self, members: MembershipService, blobs: BlobStore | None = None) -> None:
        self.members = members
        self.blobs = blobs

    def register(self, member: Membership) -> float:
        problem = self.members.probe(member)
        if problem:
            raise Unreachable(problem)
        self.members.register(member)
        return self.members.heartbeat_interval

    def assign_relay(self, pnode: str, avoid: str = "") -> tuple[str, str]:
        return self.members.assign_relay(pnode, avoid)

    def heartbeat(self, pnode: str, load: float, memory_used: int, vnodes: Sequence[str], refused: int) -> bytes:
        return self.members.heartbeat(pnode, load)

    def unregister(self, pnode: str) -> None:
        self.members.unregister(pnode)

    def report(self, pnode: str, reports: Sequence[Report]) -> None:
        self.members.deliver(pnode, reports)

    def put_blob(self, pnode: str, network: str, vnode: str, data: bytes) -> str:
        if self.blobs is None:
            raise Unavailable("this orchestrator has no checkpoint storage")
        return self.blobs.put_blob(data)

    def get_blob(self, pnode: str, network: str, vnode: str, digest: str) -> bytes:
        if self.blobs is None:
            raise Unavailable("this orchestrator has no checkpoint storage")
        try:
            return self.blobs.get_blob(digest)  # checked against its name
        except FileNotFoundError:
            raise NotFound(f"no blob {digest[:12]}…") from None

    def close(self) -> None:
        """Nothing to release."""
