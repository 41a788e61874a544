"""The local registry of VNodes on one PNode, independent of any transport."""

from __future__ import annotations

import threading

import torch

from dcnr.runtime.executor import build_vnodes
from dcnr.runtime.vnode import VNode
from dcnr.spec.model import NetworkSpec


class UnknownTarget(KeyError):
    """A network or VNode this PNode does not know (answered as NOT_FOUND)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown"


class VNodeHost:
    """Networks this PNode serves, and their VNodes, created lazily on first use.

    A VNode is built together with every VNode tied to the same weight (tied nodes
    are always colocated), from the deterministic initial parameters of its seed.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._networks: dict[str, tuple[NetworkSpec, int]] = {}
        self._vnodes: dict[tuple[str, str], VNode] = {}
        self._lock = threading.Lock()

    def add_network(self, spec: NetworkSpec, seed: int | None = None) -> None:
        with self._lock:
            self._networks[spec.name] = (spec, spec.seed if seed is None else seed)

    def networks(self) -> list[str]:
        with self._lock:
            return sorted(self._networks)

    def vnode(self, network: str, vnode_id: str) -> VNode:
        """The hosted VNode, creating it (and its tie unit) on first use."""
        with self._lock:
            found = self._vnodes.get((network, vnode_id))
            if found is not None:
                return found
            if network not in self._networks:
                raise UnknownTarget(f"unknown network {network!r}")
            spec, seed = self._networks[network]
            if vnode_id not in spec.nodes:
                raise UnknownTarget(f"network {network!r} has no VNode {vnode_id!r}")
            unit = _tie_unit(spec, vnode_id)
            for nid, v in build_vnodes(spec, seed, self.device, only=unit).items():
                self._vnodes.setdefault((network, nid), v)
            return self._vnodes[(network, vnode_id)]

    def local(self, network: str | None = None) -> list[tuple[str, VNode]]:
        """(network, VNode) pairs hosted here, optionally for one network."""
        with self._lock:
            return [(net, v) for (net, _), v in sorted(self._vnodes.items()) if network in (None, net)]

    def drop(self, network: str, vnode_id: str) -> bool:
        with self._lock:
            return self._vnodes.pop((network, vnode_id), None) is not None


def _tie_unit(spec: NetworkSpec, vnode_id: str) -> set[str]:
    """The VNode and every VNode sharing a tied weight with it."""
    publishers = spec.publishers()
    owner_of = {nid: {publishers[a] for a in n.impl.tied().values()} | (
        {nid} if n.impl.published() else set()) for nid, n in spec.nodes.items()}
    owners = owner_of[vnode_id]
    return {vnode_id} | {nid for nid, o in owner_of.items() if o & owners}
