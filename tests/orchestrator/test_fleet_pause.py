"""PNodes their volunteers pause, and the compute time PNodes contribute, as the fleet keeps them: a pause
takes a PNode's VNodes away as a quarantine does while it stays registered, a resume makes it eligible
again, and compute time is credited from heartbeats (never faster than the clock) across re-registrations."""

from __future__ import annotations

import time
from pathlib import Path

import dcnr
from dcnr.orchestrator.fleet import MAX_COMPUTE_RATE, Fleet
from dcnr.orchestrator.standing import Standings
from dcnr.orchestrator.store import SQLiteStore
from dcnr.transport.memory import MemoryConnector, MemoryFabric
from dcnr.transport.messages import Membership

TINY = Path(__file__).resolve().parents[2] / "examples" / "networks" / "tiny_lm.yml"


def fleet_of(tmp_path: Path, *pnodes: str, events: list[tuple[str, str]] | None = None) -> Fleet:
    store = SQLiteStore(tmp_path / "s.sqlite")
    fleet = Fleet(store, MemoryConnector(MemoryFabric()), heartbeat_interval=3600, standings=Standings(store),
                  events=(lambda kind, pnode, detail: events.append((kind, pnode))) if events is not None else None)
    for i, pid in enumerate(pnodes):
        fleet.register(Membership(pid, f"h:{i + 1}", {"memory_budget_bytes": 8 * 2**30}, "2.2.0"))
    return fleet


def test_a_paused_pnode_hands_its_vnodes_back_stays_registered_and_works_again_once_resumed(tmp_path: Path) -> None:
    spec = dcnr.load_network(TINY)
    events: list[tuple[str, str]] = []
    fleet = fleet_of(tmp_path, "pn-a", "pn-b", events=events)
    first = fleet.placement(spec)
    on_a = {v for v, p in first.items() if p == "pn-a"}
    assert on_a and any(p == "pn-b" for p in first.values())
    fleet.heartbeat("pn-a", 0.0, paused=True)
    assert set(fleet.lost(spec.name)) == on_a  # taken away as from a quarantined PNode: restored from checkpoints
    assert {p.id for p in fleet.alive()} == {"pn-a", "pn-b"} and fleet.store.get_pnode("pn-a").paused
    fleet.heartbeat("pn-a", 0.0)  # a beat that does not say leaves it paused
    again = fleet.placement(spec)
    assert set(again.values()) == {"pn-b"}
    assert all(again[v] == p for v, p in first.items() if p == "pn-b")  # the others' VNodes stay put
    fleet.heartbeat("pn-a", 0.0, paused=False)
    assert not fleet.store.get_pnode("pn-a").paused
    assert fleet.placement(spec) == again  # a resume moves nothing back by itself...
    fleet.heartbeat("pn-b", 0.0, paused=True)
    assert set(fleet.placement(spec).values()) == {"pn-a"}  # ...but the resumed PNode gets work again
    assert [e for e in events if e[0] in ("paused", "resumed")] == [  # kept in the fleet's history
        ("paused", "pn-a"), ("resumed", "pn-a"), ("paused", "pn-b")]


def test_compute_time_is_credited_from_heartbeats_no_faster_than_the_clock_and_kept_across_a_restart(
        tmp_path: Path) -> None:
    fleet = fleet_of(tmp_path, "pn-a")
    rec = fleet.store.get_pnode("pn-a")
    rec.last_seen = time.time() - 10.0  # its last beat, 10 s ago
    fleet.store.put_pnode(rec)
    fleet.heartbeat("pn-a", 0.0, compute_seconds=4.0)
    assert fleet.store.get_pnode("pn-a").compute_seconds == 4.0
    started = time.time()
    fleet.heartbeat("pn-a", 0.0, compute_seconds=4.0)  # a running total: nothing new
    assert fleet.store.get_pnode("pn-a").compute_seconds == 4.0
    fleet.heartbeat("pn-a", 0.0, compute_seconds=1e9)  # more than the clock allows since the beat before
    credited = fleet.store.get_pnode("pn-a").compute_seconds - 4.0
    assert 0.0 <= credited <= MAX_COMPUTE_RATE * (time.time() - started)
    rec = fleet.store.get_pnode("pn-a")
    rec.state = "dead"  # missed its beats; the same identity comes back (its process counts from zero again)
    fleet.store.put_pnode(rec)
    fleet.register(Membership("pn-a", "h:1", {"memory_budget_bytes": 8 * 2**30}, "2.2.0"))
    back = fleet.store.get_pnode("pn-a")
    assert (back.compute_seconds, back.compute_reported, back.paused) == (rec.compute_seconds, 0.0, False)
