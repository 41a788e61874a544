"""The fleet: registered PNodes, their liveness, where each VNode runs, and clients to them.

Owns PNode registration, heartbeats and the dead-after-missed-beats rule, and the
placement of each network's VNodes on live PNodes (kept durable in the store). It
must not run training: the driver does, through the clients handed out here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import grpc

from dcnr.orchestrator.placement import PNodeCapacity, place
from dcnr.orchestrator.store import AlreadyExists, NotFound, PNodeRecord, StateStore
from dcnr.proto.v1 import node_pb2, node_pb2_grpc
from dcnr.spec.model import NetworkSpec

log = logging.getLogger("dcnr.orchestrator")

MISSED_BEATS = 3  # a PNode silent for this many heartbeat intervals is dead
DEFAULT_BUDGET = 4 * 2**30


class Fleet:
    def __init__(self, store: StateStore, heartbeat_interval: float = 30.0,
                 max_message_bytes: int = 256 * 2**20) -> None:
        self.store = store
        self.heartbeat_interval = heartbeat_interval
        self.max_message_bytes = max_message_bytes
        self._lock = threading.RLock()
        self._channels: dict[str, tuple[grpc.Channel, node_pb2_grpc.VNodeServiceStub,
                                        node_pb2_grpc.PNodeServiceStub]] = {}
        self._placing = threading.Lock()
        self._batch_sizes: dict[str, int] = {}

    # -- membership --------------------------------------------------------------------------
    def register(self, pnode_id: str, address: str, hardware: dict[str, Any], version: str) -> None:
        if not pnode_id:
            raise ValueError("a PNode needs a non-empty id")
        if not address or ":" not in address:
            raise ValueError(f"PNode {pnode_id!r}: address must be host:port, got {address!r}")
        with self._lock:
            try:
                old = self.store.get_pnode(pnode_id)
            except NotFound:
                old = None
            if old is not None and old.state == "alive" and not self._overdue(old):
                raise AlreadyExists(f"PNode {pnode_id!r} is already registered and alive at {old.address}; "
                                    "start it with another id, or wait until it is marked dead")
            if old is not None:
                self._forget_placements(pnode_id)  # a restarted PNode holds none of its old VNodes
            self.store.put_pnode(PNodeRecord(pnode_id, address, {**hardware, "version": version}))
        log.info("PNode %s registered at %s", pnode_id, address, extra={"pnode": pnode_id, "address": address})

    def unregister(self, pnode_id: str) -> bool:
        with self._lock:
            moved = self._forget_placements(pnode_id)
            removed = self.store.delete_pnode(pnode_id)
            self._drop_channel(pnode_id)
        if removed:
            log.info("PNode %s unregistered (%d VNodes to place again)", pnode_id, len(moved),
                     extra={"pnode": pnode_id})
        return removed

    def heartbeat(self, pnode_id: str, load: float) -> None:
        with self._lock:
            rec = self.store.get_pnode(pnode_id)  # NotFound for a stranger
            if rec.state == "dead":
                raise NotFound(f"PNode {pnode_id!r} was marked dead; register again")
            rec.last_seen, rec.load = time.time(), load
            self.store.put_pnode(rec)

    def _overdue(self, rec: PNodeRecord) -> bool:
        return time.time() - rec.last_seen > MISSED_BEATS * self.heartbeat_interval

    def sweep(self) -> list[str]:
        """Mark PNodes that missed their beats dead and release their VNodes; returns their ids."""
        dead = []
        with self._lock:
            for rec in self.store.list_pnodes():
                if rec.state == "alive" and self._overdue(rec):
                    rec.state = "dead"
                    self.store.put_pnode(rec)
                    self._forget_placements(rec.id)
                    self._drop_channel(rec.id)
                    dead.append(rec.id)
        for pid in dead:
            log.warning("PNode %s missed %d heartbeats: marked dead", pid, MISSED_BEATS, extra={"pnode": pid})
        return dead

    def alive(self) -> list[PNodeRecord]:
        return [p for p in self.store.list_pnodes() if p.state == "alive"]

    def _forget_placements(self, pnode_id: str) -> list[tuple[str, str]]:
        return self.store.clear_placements(pnode_id)

    # -- placement ----------------------------------------------------------------------------
    def placement(self, spec: NetworkSpec, batch_size: int | None = None) -> dict[str, str]:
        """VNode → PNode id for every VNode of the network, placing what is unplaced on live PNodes
        (activations estimated for `batch_size` per micro-batch: the last size given, 8 at first)."""
        with self._placing:
            if batch_size is None:
                batch_size = self._batch_sizes.get(spec.name, 8)
            self._batch_sizes[spec.name] = batch_size
            current = self.store.placements(spec.name)
            alive = {p.id: p for p in self.alive()}
            if len(current) == len(spec.nodes) and all(p in alive for p in current.values()):
                return current
            used: dict[str, int] = dict.fromkeys(alive, 0)
            for rec in self.store.list_networks():
                if rec.name == spec.name:
                    continue
                for pid in self.store.placements(rec.name).values():
                    if pid in used:
                        used[pid] += 1 << 20  # other networks: a rough 1 MiB per VNode
            caps = [PNodeCapacity(p.id, int(p.hardware.get("memory_budget_bytes") or DEFAULT_BUDGET), used[p.id],
                                  p.load) for p in alive.values()]
            result = place(spec, caps, current, batch_size)
            self.store.set_placements(spec.name, result)
            log.info("placed network %s: %s", spec.name, ", ".join(
                f"{pid} {sum(1 for p in result.values() if p == pid)}" for pid in sorted(set(result.values()))),
                extra={"network": spec.name})
            return result

    def locate(self, spec: NetworkSpec, vnode: str) -> tuple[str, str]:
        if vnode not in spec.nodes:
            raise NotFound(f"network {spec.name!r} has no VNode {vnode!r}")
        pid = self.placement(spec)[vnode]
        return pid, self.store.get_pnode(pid).address

    def vnodes_by_pnode(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rec in self.store.list_networks():
            for vnode, pid in self.store.placements(rec.name).items():
                out.setdefault(pid, []).append(f"{rec.name}/{vnode}")
        return out

    # -- clients ------------------------------------------------------------------------------
    def vnode_stub(self, pnode_id: str) -> node_pb2_grpc.VNodeServiceStub:
        return self._channel(pnode_id)[1]

    def pnode_stub(self, pnode_id: str) -> node_pb2_grpc.PNodeServiceStub:
        return self._channel(pnode_id)[2]

    def _channel(self, pnode_id: str) -> tuple[grpc.Channel, node_pb2_grpc.VNodeServiceStub,
                                               node_pb2_grpc.PNodeServiceStub]:
        with self._lock:
            found = self._channels.get(pnode_id)
            if found is None:
                address = self.store.get_pnode(pnode_id).address
                options = [("grpc.max_send_message_length", self.max_message_bytes),
                           ("grpc.max_receive_message_length", self.max_message_bytes)]
                channel = grpc.insecure_channel(address, options=options)
                found = (channel, node_pb2_grpc.VNodeServiceStub(channel), node_pb2_grpc.PNodeServiceStub(channel))
                self._channels[pnode_id] = found
            return found

    def _drop_channel(self, pnode_id: str) -> None:
        found = self._channels.pop(pnode_id, None)
        if found is not None:
            found[0].close()

    def close(self) -> None:
        with self._lock:
            for pid in list(self._channels):
                self._drop_channel(pid)


def hardware_dict(hw: node_pb2.Hardware) -> dict[str, Any]:
    return {"cpu_cores": hw.cpu_cores, "memory_bytes": hw.memory_bytes, "device": hw.device or "cpu",
            "memory_budget_bytes": hw.memory_budget_bytes, "threads": hw.threads}
