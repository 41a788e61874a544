"""The fleet: registered PNodes, their liveness, where each VNode runs, and clients to them.

Owns PNode registration, heartbeats (with the compute time each PNode contributed, and
whether its volunteer paused it) and the dead-after-missed-beats rule, the placement of
each network's VNodes on live PNodes that are neither quarantined nor paused (kept durable in the store,
with the VNodes whose state was lost with their PNode until it is restored), and deployments:
a placement gets a version, and every PNode it concerns is told the network's definition
and the whole placement before a run uses it. It must not run training: the driver
does, through the clients handed out here.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dcnr.orchestrator.history import FleetRecorder
from dcnr.orchestrator.placement import PNodeCapacity, place
from dcnr.orchestrator.standing import Standings
from dcnr.orchestrator.store import AlreadyExists, NotFound, PNodeRecord, StateStore
from dcnr.spec.model import NetworkSpec
from dcnr.transport.interfaces import Connector, HopTransport, PNodeClient
from dcnr.transport.messages import Membership, Placement, network_digest

log = logging.getLogger("dcnr.orchestrator")

MISSED_BEATS = 3  # a PNode silent for this many heartbeat intervals is dead
DEFAULT_BUDGET = 4 * 2**30
MAX_BUDGET = 2**40  # the most memory a PNode may claim for VNodes (it may still lie below that: SPEC §12)
MAX_COMPUTE_RATE = 2.0  # compute seconds credited per second of heartbeats: a compute and a verification thread


@dataclass(frozen=True)
class Deployment:
    """A network's placement as the PNodes know it: versioned, with every host's address."""

    version: int
    digest: str
    assignments: dict[str, str]  # VNode -> PNode
    addresses: dict[str, str]  # PNode -> host:port

    def pnodes(self) -> list[str]:
        return sorted(set(self.assignments.values()))


class Fleet:
    """The PNodes of one orchestrator. With `standings`, quarantined PNodes get no VNodes (without, nobody is
    quarantined)."""

    def __init__(self, store: StateStore, connector: Connector, heartbeat_interval: float = 30.0, *,
                 standings: Standings | None = None, events: FleetRecorder | None = None) -> None:
        self.store = store
        self.events = events or (lambda kind, pnode, detail: None)  # joins, deaths, departures, quarantines
        self.connector = connector
        self.heartbeat_interval = heartbeat_interval
        self.standings = standings
        self._lock = threading.RLock()
        self._placing = threading.Lock()  # placements and membership changes (taken before `_lock`)
        self._batch_sizes: dict[str, int] = {}
        self._deployed: dict[str, Deployment] = {}
        self._told: dict[tuple[str, str], int] = {}  # (network, PNode) -> placement version it holds
        self._versions = itertools.count(int(time.time() * 1000))  # grows across orchestrator restarts
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="deploy")

    # -- membership --------------------------------------------------------------------------
    def admissible(self, member: Membership) -> PNodeRecord | None:
        """The PNode's record if it has one; ValueError for a malformed id or address, AlreadyExists while a
        PNode of that id is alive."""
        if not member.id:
            raise ValueError("a PNode needs a non-empty id")
        if not member.address or ":" not in member.address:
            raise ValueError(f"PNode {member.id!r}: address must be host:port, got {member.address!r}")
        try:
            old = self.store.get_pnode(member.id)
        except NotFound:
            return None
        if old.state == "alive" and not self._overdue(old):
            raise AlreadyExists(f"PNode {member.id!r} is already registered and alive at {old.address}; "
                                "start it with another id, or wait until it is marked dead")
        return old

    def register(self, member: Membership) -> None:
        pnode_id, address, hardware, version = member.id, member.address, member.hardware, member.version
        with self._placing, self._lock:  # no placement sees half a change
            old = self.admissible(member)
            if old is not None:
                self._forget_placements(pnode_id)  # a restarted PNode holds none of its old VNodes
            self._forget_told(pnode_id)
            budget = int(hardware.get("memory_budget_bytes") or DEFAULT_BUDGET)
            physical = int(hardware.get("memory_bytes") or 0)
            budget = min(budget, physical or budget, MAX_BUDGET)  # a claim of more than it has attracts nothing more
            self.store.put_pnode(PNodeRecord(pnode_id, address, {**hardware, "memory_budget_bytes": budget,
                                                                 "version": version, "name": member.name or pnode_id},
                                             compute_seconds=old.compute_seconds if old is not None else 0.0))
        log.info("PNode %s registered at %s", pnode_id, address, extra={"pnode": pnode_id, "address": address})
        self.events("joined", pnode_id, address)

    def unregister(self, pnode_id: str) -> bool:
        with self._placing, self._lock:  # no placement sees half a change
            moved = self._forget_placements(pnode_id)
            removed = self.store.delete_pnode(pnode_id)
            self._forget_told(pnode_id)
        if removed:
            log.info("PNode %s unregistered (%d VNodes to place again)", pnode_id, len(moved),
                     extra={"pnode": pnode_id})
            self.events("left", pnode_id, f"{len(moved)} VNodes to place again")
        return removed

    def heartbeat(self, pnode_id: str, load: float, paused: bool | None = None,
                  compute_seconds: float | None = None) -> None:
        """Record a beat: its load; with `compute_seconds`, the running total of compute its process reports
        (credited at most `MAX_COMPUTE_RATE` times the time since the last beat); with `paused`, whether its
        volunteer paused it (a change pauses or resumes it)."""
        with self._lock:
            rec = self.store.get_pnode(pnode_id)  # NotFound for a stranger
            if rec.state == "dead":
                raise NotFound(f"PNode {pnode_id!r} was marked dead; register again")
            now = time.time()
            if compute_seconds is not None:
                gained = min(max(0.0, compute_seconds - rec.compute_reported),
                             MAX_COMPUTE_RATE * max(0.0, now - rec.last_seen))
                rec.compute_seconds += gained
                rec.compute_reported += gained
            rec.last_seen, rec.load = now, load
            self.store.put_pnode(rec)
        if paused is not None and paused != rec.paused:
            self.pause(pnode_id, paused)

    def pause(self, pnode_id: str, paused: bool = True) -> list[tuple[str, str]]:
        """Pause a PNode (its volunteer asked): it stays registered and alive, but gets no work, and every
        VNode it holds is taken away as from a quarantined PNode (`quarantine`); sessions restore them
        elsewhere from their checkpoints. `paused=False` resumes it: placement may use it again. Returns the
        (network, vnode) pairs taken away."""
        with self._placing, self._lock:  # no placement sees half a change
            rec = self.store.get_pnode(pnode_id)
            rec.paused = paused
            self.store.put_pnode(rec)
            moved = self._forget_placements(pnode_id) if paused else []
            if paused:
                self._forget_told(pnode_id)
        if paused:
            log.info("PNode %s paused: %d VNodes to place elsewhere", pnode_id, len(moved), extra={"pnode": pnode_id})
            self.events("paused", pnode_id, f"{len(moved)} VNodes to place elsewhere")
        else:
            log.info("PNode %s resumed", pnode_id, extra={"pnode": pnode_id})
            self.events("resumed", pnode_id, "")
        return moved

    def _overdue(self, rec: PNodeRecord) -> bool:
        return time.time() - rec.last_seen > MISSED_BEATS * self.heartbeat_interval

    def sweep(self) -> list[str]:
        """Mark PNodes that missed their beats dead and release their VNodes; returns their ids."""
        dead = []
        with self._placing, self._lock:  # no placement sees half a change
            for rec in self.store.list_pnodes():
                if rec.state == "alive" and self._overdue(rec):
                    rec.state = "dead"
                    self.store.put_pnode(rec)
                    self._forget_placements(rec.id)
                    self._forget_told(rec.id)
                    dead.append(rec.id)
        for pid in dead:
            log.warning("PNode %s missed %d heartbeats: marked dead", pid, MISSED_BEATS, extra={"pnode": pid})
            self.events("dead", pid, f"missed {MISSED_BEATS} heartbeats")
        return dead

    def quarantine(self, pnode_id: str) -> list[tuple[str, str]]:
        """Take every VNode away from a PNode the standings just quarantined: its placements are cleared and
        its VNodes recorded lost (their state there is not believed), as for a dead PNode, and what it was
        told is forgotten. It stays registered and alive (it may go on heartbeating); while the standings
        say it is quarantined, placement passes it over. Returns the (network, vnode) pairs it hosted."""
        with self._placing, self._lock:  # no placement sees half a change
            moved = self._forget_placements(pnode_id)
            self._forget_told(pnode_id)
        log.warning("PNode %s quarantined: %d VNodes to place elsewhere", pnode_id, len(moved),
                    extra={"pnode": pnode_id})
        return moved

    def alive(self) -> list[PNodeRecord]:
        return [p for p in self.store.list_pnodes() if p.state == "alive"]

    def _quarantined(self, pnode_id: str) -> bool:
        return self.standings is not None and self.standings.quarantined(pnode_id)

    def _forget_placements(self, pnode_id: str) -> list[tuple[str, str]]:
        return self.store.clear_placements(pnode_id)

    def _forget_told(self, pnode_id: str) -> None:
        for key in [k for k in self._told if k[1] == pnode_id]:
            del self._told[key]

    # -- placement ----------------------------------------------------------------------------
    def placement(self, spec: NetworkSpec, batch_size: int | None = None) -> dict[str, str]:
        """VNode → PNode id for every VNode of the network, placing what is unplaced on live PNodes
        (activations estimated for `batch_size` per micro-batch: the last size given, 8 at first)."""
        with self._placing:
            if batch_size is None:
                batch_size = self._batch_sizes.get(spec.name, 8)
            self._batch_sizes[spec.name] = batch_size
            current = self.store.placements(spec.name)
            alive = {p.id: p for p in self.alive() if not self._quarantined(p.id) and not p.paused}
            barred = sorted({p for p in current.values() if self._quarantined(p)})
            if barred:  # quarantined without `quarantine` (e.g. by an earlier process): its VNodes are lost too
                with self._lock:
                    for pid in barred:
                        self._forget_placements(pid)
                        self._forget_told(pid)
                current = self.store.placements(spec.name)
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

    def deploy(self, spec: NetworkSpec, yaml_text: str, seed: int, step: int, vocabularies: dict[str, str],
               batch_size: int | None = None) -> Deployment:
        """Place the network and make sure every PNode it concerns holds the current placement: hosts, and
        live PNodes that hosted part of it before (they drop what is no longer theirs)."""
        assignments = self.placement(spec, batch_size)
        with self._lock:
            hosts = {pid: self.store.get_pnode(pid) for pid in set(assignments.values())}
            addresses = {pid: rec.address for pid, rec in hosts.items()}
            keys = {pid: bytes.fromhex(rec.hardware["public_key"]) for pid, rec in hosts.items()
                    if rec.hardware.get("public_key")}
            digest = network_digest(yaml_text)
            current = self._deployed.get(spec.name)
            if current is None or (current.digest, current.assignments, current.addresses) != (
                    digest, assignments, addresses):
                current = self._deployed[spec.name] = Deployment(next(self._versions), digest, assignments, addresses)
            alive = {p.id for p in self.alive()}
            targets = sorted((set(assignments.values()) | {p for n, p in self._told if n == spec.name}) & alive)
            stale = [p for p in targets if self._told.get((spec.name, p)) != current.version]
        if stale:
            placement = Placement(spec.name, yaml_text, seed, digest, current.version, step, assignments, addresses,
                                  vocabularies, keys)
            for pid, future in [(p, self._pool.submit(self.client(p).place_network, placement)) for p in stale]:
                future.result()
                with self._lock:
                    self._told[(spec.name, pid)] = current.version
        return current

    def forget_network(self, name: str) -> None:
        """A network was deleted or redefined: nothing deployed of it is current any more (nor lost)."""
        with self._lock:
            self._deployed.pop(name, None)
            for key in [k for k in self._told if k[0] == name]:
                del self._told[key]
            self.store.clear_lost(name)

    def lost(self, network: str) -> dict[str, int]:
        """VNodes whose host died, left or restarted since the network's state was last restored (vnode ->
        loss number). Placed again, they are built from the seed: their trained state is gone."""
        return self.store.lost(network)

    def restored(self, network: str, upto: int) -> None:
        """The network's whole state was put back: losses numbered up to `upto` no longer matter."""
        self.store.clear_lost(network, upto)

    def vnodes_by_pnode(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rec in self.store.list_networks():
            for vnode, pid in self.store.placements(rec.name).items():
                out.setdefault(pid, []).append(f"{rec.name}/{vnode}")
        return out

    # -- clients ------------------------------------------------------------------------------
    def client(self, pnode_id: str) -> PNodeClient:
        return self.connector.pnode(self.store.get_pnode(pnode_id).address)

    def hops(self) -> HopTransport:
        return self.connector.hops()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.connector.close()
