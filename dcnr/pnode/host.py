"""The local registry of VNodes on one PNode, independent of any transport."""

from __future__ import annotations

import threading

import torch

from dcnr.data.vocabularies import Vocabularies
from dcnr.errors import NotFound, ResourceExhausted
from dcnr.runtime.executor import build_vnodes
from dcnr.runtime.memory import estimate_vnode_memory
from dcnr.runtime.vnode import RequestId, StepClock, VNode
from dcnr.spec.model import NetworkSpec
from dcnr.spec.passes import ExecutionPlan


class UnknownTarget(NotFound):
    """A network or VNode this PNode does not know."""


class BudgetExceeded(ResourceExhausted):
    """Hosting a VNode would exceed this PNode's memory budget (the work is refused)."""


class VNodeHost:
    """Networks this PNode serves, and their VNodes, created lazily on first use.

    A VNode is built together with every VNode tied to the same weight (tied nodes
    are always colocated), from the deterministic initial parameters of its seed.
    """

    def __init__(self, device: str | torch.device = "cpu", memory_budget: int | None = None) -> None:
        self.device = torch.device(device)
        self.memory_budget = memory_budget
        self.memory_used = 0  # estimated bytes of hosted VNodes
        self._networks: dict[str, tuple[ExecutionPlan, int, Vocabularies | None]] = {}
        self._clocks: dict[str, StepClock] = {}  # each network's current training step
        self._vnodes: dict[tuple[str, str], VNode] = {}
        self._memory: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def add_network(self, network: ExecutionPlan | NetworkSpec, seed: int | None = None,
                    vocabularies: Vocabularies | None = None) -> None:
        """Serve a network: the executed graph of its plan (a bare spec runs as written); its text nodes
        load stored vocabularies through `vocabularies`."""
        executed = network if isinstance(network, ExecutionPlan) else ExecutionPlan(network, network, {}, {})
        with self._lock:
            self._networks[executed.spec.name] = (executed, executed.spec.seed if seed is None else seed,
                                                  vocabularies)

    def remove_network(self, network: str) -> int:
        """Forget a network and drop its VNodes; returns how many were dropped."""
        with self._lock:
            self._networks.pop(network, None)
            self._clocks.pop(network, None)
            keys = [k for k in self._vnodes if k[0] == network]
            for k in keys:
                self._forget(k)
            return len(keys)

    def clock(self, network: str) -> StepClock:
        """The network's step on this PNode: one counter, read by every VNode of it hosted here."""
        with self._lock:
            return self._clocks.setdefault(network, StepClock())

    def step(self, network: str) -> int:
        return self.clock(network).step

    def set_step(self, network: str, step: int) -> None:
        self.clock(network).step = step

    def networks(self) -> list[str]:
        with self._lock:
            return sorted(self._networks)

    def vnode(self, network: str, vnode_id: str) -> VNode:
        """The hosted VNode, creating it (and its tie unit) on first use.

        Building happens outside the lock (the first optimizer of a process can take a
        while), with the unit's memory reserved first so the budget holds meanwhile.
        """
        with self._lock:
            found = self._vnodes.get((network, vnode_id))
            if found is not None:
                return found
            if network not in self._networks:
                raise UnknownTarget(f"unknown network {network!r}")
            executed, seed, vocabularies = self._networks[network]
            spec = executed.spec
            if vnode_id not in spec.nodes:
                raise UnknownTarget(f"network {network!r} has no VNode {vnode_id!r}")
            unit = spec.tie_group(vnode_id)
            need = {nid: estimate_vnode_memory(spec.nodes[nid], batch_size=0) for nid in unit}  # state only
            if self.memory_budget is not None and self.memory_used + sum(need.values()) > self.memory_budget:
                raise BudgetExceeded(
                    f"memory budget exceeded: hosting {', '.join(sorted(unit)[:4])} needs "
                    f"{sum(need.values()) / 2**20:.1f} MiB, {max(0, self.memory_budget - self.memory_used) / 2**20:.1f}"
                    f" MiB of {self.memory_budget / 2**20:.1f} MiB left")
            self.memory_used += sum(need.values())  # reserved while building
        try:
            built = build_vnodes(executed, seed, self.device, only=unit, vocabularies=vocabularies,
                                 clock=self.clock(network))
        finally:
            with self._lock:
                self.memory_used -= sum(need.values())
        with self._lock:
            for nid, v in built.items():
                if (network, nid) not in self._vnodes:
                    self._vnodes[(network, nid)] = v
                    self._memory[(network, nid)] = need[nid]
                    self.memory_used += need[nid]
            return self._vnodes[(network, vnode_id)]

    def hosted(self, network: str, vnode_id: str) -> VNode | None:
        """The VNode if it is built already (never builds one)."""
        with self._lock:
            return self._vnodes.get((network, vnode_id))

    def local(self, network: str | None = None) -> list[tuple[str, VNode]]:
        """(network, VNode) pairs hosted here, optionally for one network."""
        with self._lock:
            return [(net, v) for (net, _), v in sorted(self._vnodes.items()) if network in (None, net)]

    def drop(self, network: str, vnode_id: str) -> bool:
        with self._lock:
            return self._forget((network, vnode_id))

    def _forget(self, key: tuple[str, str]) -> bool:
        self.memory_used -= self._memory.pop(key, 0)
        return self._vnodes.pop(key, None) is not None

    def drop_request(self, network: str, rid: RequestId) -> list[str]:
        """Forget one request's unfinished work everywhere; returns the VNodes that held some."""
        held = []
        for (net, nid), v in self.local_items():
            if net == network and v.holds(rid):
                v.drop(rid)
                held.append(nid)
        return held

    def memory_of(self, network: str, vnode_id: str) -> int:
        return self._memory.get((network, vnode_id), 0)

    def local_items(self) -> list[tuple[tuple[str, str], VNode]]:
        with self._lock:
            return sorted(self._vnodes.items())
