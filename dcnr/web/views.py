"""The JSON the dashboard API answers with: the orchestrator's state in the shapes the dashboard contract names.

Each function reads the orchestrator's services (`fleet`, `relays`, `sessions`, `networks`
through the driver, `standings`, `history`, `timelines`, `store`) and returns plain dicts and
lists of JSON values: floats that are not finite become null. PNode and relay addresses are
the volunteers' and are shown only to callers with a token (`addresses=False` blanks them, as
the gRPC API keeps `ListPNodes` and `ListRelays` from anonymous callers).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from dcnr import __version__
from dcnr.errors import NotFound
from dcnr.orchestrator.store import PNodeRecord, SessionRecord, Standing

if TYPE_CHECKING:
    from dcnr.orchestrator.app import Orchestrator

OPERATOR_VERDICTS = ("released", "trusted", "untrusted")  # validation log entries that are no check of work
HARDWARE = ("cpu_cores", "memory_bytes", "device", "memory_budget_bytes", "threads")


def finite(value: Any) -> float | None:
    """A float for JSON: None for a missing, infinite or NaN value."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def relayed(address: str) -> bool:
    """Whether a PNode's address is a relay's ("relay-host:port/PNODE-ID")."""
    return "/" in address


def pnode_state(rec: PNodeRecord, standing: Standing | None) -> str:
    """alive, dead, quarantined (alive, and barred from work) or paused (alive, paused by its volunteer)."""
    if rec.state != "alive":
        return rec.state
    if getattr(rec, "paused", False):  # heartbeats that say so set it
        return "paused"
    if standing is not None and standing.quarantined():
        return "quarantined"
    return "alive"


def compute_seconds(rec: PNodeRecord, timed: dict[str, float]) -> float:
    """Compute time a PNode contributed: as credited from its heartbeats where they report it, else what this
    orchestrator timed of its work in session steps since it started."""
    credited = getattr(rec, "compute_seconds", None)
    return float(credited) if credited else float(timed.get(rec.id, 0.0))


class Views:
    """The dashboard's JSON of one orchestrator."""

    def __init__(self, orch: Orchestrator) -> None:
        self.o = orch

    # -- the fleet ------------------------------------------------------------------------------------
    def _relay_of(self) -> dict[str, str]:
        """PNode -> the relay it was sent to, and relay address -> relay id (the orchestrator's own relay's
        address is ":port")."""
        found: dict[str, str] = {}
        for r in self.o.relays.records():
            found[r.address] = r.id
            for pnode in self.o.relays.assigned(r.id):
                found[pnode] = r.id
        return found

    def _connection(self, rec: PNodeRecord, relay_of: dict[str, str]) -> str:
        if not relayed(rec.address):
            return "direct"
        host_port = rec.address.partition("/")[0]
        relay = relay_of.get(rec.id) or relay_of.get(host_port) or relay_of.get(":" + host_port.rpartition(":")[2])
        return f"relayed via {relay or host_port}"

    def _pnode(self, rec: PNodeRecord | None, pnode_id: str, standing: Standing, hosted: list[str],
               relay_of: dict[str, str], timed: dict[str, float], addresses: bool) -> dict[str, Any]:
        quarantined = standing.quarantined()
        hw = rec.hardware if rec is not None else {}
        return {
            "id": pnode_id,
            "name": str(hw.get("name", "")),
            "address": rec.address if rec is not None and addresses else "",
            "state": pnode_state(rec, standing) if rec is not None else "unregistered",
            "connection": self._connection(rec, relay_of) if rec is not None else "direct",
            "trusted": standing.trusted,
            "charges": standing.charges,
            "quarantined_until": standing.quarantined_until if quarantined else None,
            "hardware": {k: hw.get(k, "cpu" if k == "device" else 0) for k in HARDWARE},
            "load": finite(rec.load) if rec is not None else 0.0,
            "vnodes": sorted(hosted),
            "compute_seconds": compute_seconds(rec, timed) if rec is not None else 0.0,
            "last_seen": rec.last_seen if rec is not None else 0.0,
        }

    def pnodes(self, addresses: bool = True) -> list[dict[str, Any]]:
        standings = {s.pnode: s for s in self.o.store.list_standings()}
        hosted = self.o.fleet.vnodes_by_pnode()
        relay_of, timed = self._relay_of(), self.o.timelines.compute_seconds()
        return [self._pnode(p, p.id, standings.get(p.id) or Standing(p.id), hosted.get(p.id, []), relay_of, timed,
                            addresses) for p in self.o.store.list_pnodes()]

    def pnode(self, pnode_id: str, addresses: bool = True) -> dict[str, Any]:
        """One PNode; one that left is shown by its standing alone (state "unregistered")."""
        rec = next((p for p in self.o.store.list_pnodes() if p.id == pnode_id), None)
        standing = self.o.standings.get(pnode_id)
        if rec is None and standing == Standing(pnode_id):
            raise NotFound(f"unknown PNode {pnode_id!r}")
        return self._pnode(rec, pnode_id, standing, self.o.fleet.vnodes_by_pnode().get(pnode_id, []),
                           self._relay_of(), self.o.timelines.compute_seconds(), addresses)

    def relays(self, addresses: bool = True) -> list[dict[str, Any]]:
        return [{"id": r.id, "address": r.address if addresses else "", "state": r.state, "attached": r.attached,
                 "bytes_forwarded": r.bytes_forwarded, "hop_bytes": r.hop_bytes,
                 "pnodes": self.o.relays.assigned(r.id)} for r in self.o.relays.records()]

    # -- networks -------------------------------------------------------------------------------------
    def networks(self) -> list[dict[str, Any]]:
        found = []
        for rec in self.o.store.list_networks():
            try:
                net = self.o.driver.network(rec.name)
            except (NotFound, ValueError):  # deleted meanwhile, or a definition this version cannot read
                continue
            found.append({"name": rec.name, "vnodes": len(net.spec.nodes), "step": net.step})
        return found

    def graph(self, name: str) -> dict[str, Any]:
        """The executed graph's VNodes, where each is placed, and its edges (one per pair of VNodes)."""
        spec = self.o.driver.network(name).spec  # NotFound for an unknown network
        placed = self.o.store.placements(name)
        edges = list(dict.fromkeys((e.src, e.dst) for e in spec.edges))
        return {"nodes": [{"id": n.id, "type": n.type, "pnode": placed.get(n.id)} for n in spec.nodes.values()],
                "edges": [{"from": src, "to": dst} for src, dst in edges]}

    # -- sessions -------------------------------------------------------------------------------------
    def _session(self, rec: SessionRecord) -> dict[str, Any]:
        policy = rec.validation
        if not policy:  # the network's default
            try:
                policy = self.o.driver.network(rec.network).spec.validation
            except (NotFound, ValueError):
                policy = ""
        return {"id": rec.id, "network": rec.network, "dataset": rec.dataset, "state": rec.state, "step": rec.step,
                "steps": rec.steps, "validation": policy}

    def sessions(self) -> list[dict[str, Any]]:
        return [self._session(rec) for rec in self.o.store.list_sessions()]

    def session(self, session_id: str) -> dict[str, Any]:
        return self._session(self.o.store.get_session(session_id))

    def history(self, session_id: str, from_step: int = 0) -> list[dict[str, Any]]:
        self.o.store.get_session(session_id)  # NotFound for an unknown session
        return [{"step": ev["step"], "loss": finite(ev.get("loss")),
                 "learning_rates": {k: finite(v) for k, v in ev.get("learning_rates", {}).items()},
                 "tokens_per_second": finite(ev.get("tokens_per_second")),
                 "duration_seconds": finite(ev.get("duration_seconds")),
                 "held_out_loss": finite(ev.get("held_out_loss")), "at": finite(ev.get("at"))}
                for ev in self.o.history.steps(session_id, from_step)]

    def timeline(self, session_id: str, step: int | None = None) -> dict[str, Any]:
        self.o.store.get_session(session_id)
        found = self.o.timelines.timeline(session_id, step)
        if found is None:
            kept = self.o.timelines.steps(session_id)
            raise NotFound(f"session {session_id} has no timeline of step {step}; kept: "
                           f"{', '.join(map(str, kept)) or 'none'}" if step is not None else
                           f"session {session_id} has no timed step kept yet")
        return found

    # -- logs -----------------------------------------------------------------------------------------
    def validation(self, session: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        return [{"seq": e.seq, "at": e.at, "network": e.network, "session": e.session, "step": e.step,
                 "unit": e.unit, "accused": e.accused, "verifier": e.verifier, "referee": e.referee,
                 "verdict": e.verdict, "detail": e.detail} for e in self.o.standings.events(session, "", limit)]

    def events(self, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        return [{"seq": e.seq, "at": e.at, "kind": e.kind, "pnode": e.pnode, "detail": e.detail}
                for e in self.o.history.fleet_events(after, limit)]

    def overview(self, addresses: bool = True) -> dict[str, Any]:
        return {"version": __version__, "time": time.time(), "pnodes": self.pnodes(addresses),
                "relays": self.relays(addresses), "sessions": self.sessions(), "networks": self.networks()}
