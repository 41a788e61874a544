"""Relays: which serve, how much they carry, and which one a PNode behind NAT attaches to.

Owns the relay registry and the assignment of PNodes to relays: the alive relay with the
fewest PNodes assigned (a relay that just failed a PNode is avoided), else the orchestrator's
own relay, which always serves. The registry lives in memory: after an orchestrator restart a
relay's heartbeat is answered NotFound and it registers again, like a PNode. A relay that misses
its beats is dead: PNodes attached to it lose their streams and come back for another. It must
not carry traffic: relays do (`dcnr.transport.grpc.relay`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from dcnr.errors import InvalidArgument, NotFound
from dcnr.orchestrator.fleet import MISSED_BEATS
from dcnr.orchestrator.history import FleetRecorder

BUILTIN = "orchestrator"  # the id of the orchestrator's own relay


@dataclass
class RelayRecord:
    id: str
    address: str  # host:port of its RelayService ("" host: the orchestrator's own)
    last_seen: float
    attached: int = 0
    bytes_forwarded: int = 0
    hop_bytes: int = 0  # of `bytes_forwarded`, hops'
    state: str = "alive"  # or dead


class Relays:
    """Relays of one orchestrator. `builtin()` tells the orchestrator's own relay's (port, attached PNodes,
    bytes forwarded, of which hops)."""

    def __init__(self, heartbeat_interval: float, builtin: Callable[[], tuple[int, int, int, int]],
                 events: FleetRecorder | None = None) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.builtin = builtin
        self.events = events or (lambda kind, relay, detail: None)  # relays joining and dying
        self._relays: dict[str, RelayRecord] = {}
        self._assigned: dict[str, str] = {}  # PNode -> the relay it was sent to last
        self._lock = threading.Lock()

    def register(self, relay_id: str, address: str) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidArgument(f"relay {relay_id}: address must be host:port, got {address!r}")
        with self._lock:
            self._relays[relay_id] = RelayRecord(relay_id, address, time.time())
        self.events("relay-joined", relay_id, address)

    def heartbeat(self, relay_id: str, attached: int, bytes_forwarded: int, hop_bytes: int = 0) -> None:
        with self._lock:
            rec = self._relays.get(relay_id)
            if rec is None or rec.state == "dead":
                raise NotFound(f"relay {relay_id!r} is not registered here; register again")
            rec.last_seen, rec.attached = time.time(), attached
            rec.bytes_forwarded, rec.hop_bytes = bytes_forwarded, hop_bytes

    def sweep(self) -> list[str]:
        """Mark relays that missed their beats dead; returns their ids."""
        now, dead = time.time(), []
        with self._lock:
            for rec in self._relays.values():
                if rec.state == "alive" and now - rec.last_seen > MISSED_BEATS * self.heartbeat_interval:
                    rec.state = "dead"
                    dead.append(rec.id)
        for relay in dead:
            self.events("relay-dead", relay, f"missed {MISSED_BEATS} heartbeats")
        return dead

    def assign(self, pnode: str, avoid: str = "") -> RelayRecord:
        """The relay `pnode` should attach to: the alive one (other than `avoid`) with the fewest PNodes sent
        to it, else the orchestrator's own."""
        with self._lock:
            load = Counter(self._assigned.values())
            alive = [r for r in self._relays.values() if r.state == "alive" and r.id != avoid]
            chosen = min(alive, key=lambda r: (load[r.id], r.id)) if alive else self._builtin_record()
            self._assigned[pnode] = chosen.id
            return chosen

    def _builtin_record(self) -> RelayRecord:
        port, attached, forwarded, hops = self.builtin()
        return RelayRecord(BUILTIN, f":{port}", time.time(), attached, forwarded, hops)

    def records(self) -> list[RelayRecord]:
        """Every relay known, the orchestrator's own first."""
        with self._lock:
            return [self._builtin_record(), *sorted(self._relays.values(), key=lambda r: r.id)]

    def assigned(self, relay_id: str) -> list[str]:
        with self._lock:
            return sorted(p for p, r in self._assigned.items() if r == relay_id)
