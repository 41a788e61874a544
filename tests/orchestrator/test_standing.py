"""The standing of PNode identities: kept across restarts and departures, charges quarantine at the threshold
for the cooling-off, operators trust and release, and the fleet places nothing on a quarantined PNode."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

import dcnr
from dcnr.errors import Conflict, InvalidArgument, NotFound
from dcnr.orchestrator.fleet import Fleet
from dcnr.orchestrator.standing import MAX_EVENTS, Standings
from dcnr.orchestrator.store import SessionRecord, SQLiteStore, Standing, ValidationEvent
from dcnr.transport.memory import MemoryConnector, MemoryFabric
from dcnr.transport.messages import Membership

TINY = Path(__file__).resolve().parents[2] / "examples" / "networks" / "tiny_lm.yml"
DAY = 86400.0


def event(accused: str, verdict: str, session: str = "s1", network: str = "net", step: int = 0) -> ValidationEvent:
    return ValidationEvent(network, session, step, f"vnode-{step}", accused, "verifier", "", verdict, "")


# -- the store ----------------------------------------------------------------------------------------
def test_standings_and_events_survive_a_reopen_and_the_pnode_leaving(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    s = SQLiteStore(db)
    assert s.get_standing("pn-new") == Standing("pn-new")  # the default for an unknown identity
    s.put_standing(Standing("pn-b", trusted=True))
    s.put_standing(Standing("pn-a", charges=2, quarantined_until=123.5, reason="mismatch at step 3"))
    first = s.add_validation_event(ValidationEvent("net", "s1", 3, "fc1/0", "pn-a", "pn-b", "pn-c", "fail",
                                                   "max |Δ| 0.5", at=10.0))
    second = s.add_validation_event(event("pn-b", "pass"))
    assert second > first
    s.delete_pnode("pn-a")  # unregistering or dying forgets the PNode, not its standing
    s.close()
    s = SQLiteStore(db)
    assert s.list_standings() == [Standing("pn-a", False, 2, 123.5, "mismatch at step 3"), Standing("pn-b", True)]
    assert s.get_standing("pn-a").quarantined_until == 123.5
    logged = s.list_validation_events()
    assert [e.seq for e in logged] == [first, second]
    assert logged[0] == ValidationEvent("net", "s1", 3, "fc1/0", "pn-a", "pn-b", "pn-c", "fail", "max |Δ| 0.5",
                                        at=10.0, seq=first)
    s.close()


def test_event_listings_filter_and_keep_the_newest_oldest_first(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.sqlite")
    for step in range(6):
        s.add_validation_event(event("pn-a", "pass", session=f"s{step % 2}", network="n1" if step < 4 else "n2",
                                     step=step))
    assert [e.step for e in s.list_validation_events()] == [0, 1, 2, 3, 4, 5]
    assert [e.step for e in s.list_validation_events(limit=2)] == [4, 5]
    assert [e.step for e in s.list_validation_events(session="s0")] == [0, 2, 4]
    assert [e.step for e in s.list_validation_events(network="n2")] == [4, 5]
    assert [e.step for e in s.list_validation_events(session="s1", network="n1")] == [1, 3]
    assert [e.step for e in s.list_validation_events(session="s1", limit=1)] == [5]
    assert s.list_validation_events(session="ghost") == []
    with pytest.raises(ValueError, match="limit"):
        s.list_validation_events(limit=0)


def test_a_session_stored_before_validation_existed_still_loads(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    SQLiteStore(db).close()
    old = {"id": "s1", "network": "n", "dataset": "d", "steps": 5, "batch_size": 4, "micro_batches": 1, "seed": 0,
           "checkpoint_every": 0, "state": "created", "step": 0, "error": "", "created_at": 1.0}
    with sqlite3.connect(db) as raw:
        raw.execute("INSERT INTO sessions VALUES (?, ?)", ("s1", json.dumps(old)))
    s = SQLiteStore(db)
    assert s.get_session("s1").validation == "" and s.list_sessions()[0].id == "s1"
    s.put_session(SessionRecord("s2", "n", "d", 5, 4, 1, 0, validation="full"))
    assert s.get_session("s2").validation == "full"


# -- standings ------------------------------------------------------------------------------------------
def test_charges_quarantine_at_the_threshold_for_the_cooling_off(tmp_path: Path) -> None:
    standings = Standings(SQLiteStore(tmp_path / "s.sqlite"), quarantine_after=2, cooling_off=DAY)
    assert not standings.charge("pn-a", "mismatch at step 1", now=1000.0)
    assert not standings.quarantined("pn-a", now=1000.0)
    assert standings.charge("pn-a", "mismatch at step 2", now=2000.0)  # the second charge quarantines
    rec = standings.get("pn-a")
    assert (rec.charges, rec.quarantined_until, rec.reason) == (2, 2000.0 + DAY, "mismatch at step 2")
    assert standings.quarantined("pn-a", now=2000.0 + DAY - 1)
    assert not standings.charge("pn-a", "late report", now=3000.0)  # already quarantined: extended, not new
    assert standings.get("pn-a").quarantined_until == 3000.0 + DAY
    assert not standings.quarantined("pn-a", now=3000.0 + DAY)  # the cooling-off is over
    assert standings.charge("pn-a", "again", now=4000.0 + DAY)  # its charges stay: the next one quarantines
    assert not standings.quarantined("pn-b") and standings.get("pn-b") == Standing("pn-b")


def test_release_clears_quarantine_and_charges_and_is_logged(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    standings = Standings(store)
    with pytest.raises(NotFound, match="unknown PNode 'pn-ghost'"):
        standings.release("pn-ghost")
    assert standings.charge("pn-a", "mismatch")  # one charge is enough by default
    assert standings.quarantined("pn-a")
    released = standings.release("pn-a", by="operator admin")
    assert released == Standing("pn-a") and not standings.quarantined("pn-a")
    with pytest.raises(Conflict, match="PNode pn-a is not quarantined"):
        standings.release("pn-a")
    (logged,) = standings.events()
    assert (logged.accused, logged.verdict, logged.detail) == ("pn-a", "released", "by operator admin")


def test_trust_needs_a_known_identity_and_is_logged(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    standings = Standings(store)
    with pytest.raises(NotFound, match="unknown PNode"):
        standings.trust("pn-typo")
    with pytest.raises(InvalidArgument, match="PNode id"):
        standings.trust("")
    fleet = Fleet(store, MemoryConnector(MemoryFabric()), standings=standings)
    fleet.register(Membership("pn-a", "h:1", {"memory_budget_bytes": 2**30}, "2.0.0"))
    assert standings.trust("pn-a").trusted and standings.trusted("pn-a")
    fleet.unregister("pn-a")
    assert standings.trusted("pn-a")  # a standing follows the identity after it leaves
    assert not standings.trust("pn-a", trusted=False).trusted  # and it is known by its standing
    assert [e.verdict for e in standings.events()] == ["trusted", "untrusted"]


def test_bad_settings_and_limits_are_user_errors(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    with pytest.raises(InvalidArgument, match="quarantine_after"):
        Standings(store, quarantine_after=0)
    with pytest.raises(InvalidArgument, match="cooling-off"):
        Standings(store, cooling_off=0)
    for limit in (0, MAX_EVENTS + 1):
        with pytest.raises(InvalidArgument, match="limit"):
            Standings(store).events(limit=limit)


def test_concurrent_charges_are_all_counted(tmp_path: Path) -> None:
    standings = Standings(SQLiteStore(tmp_path / "s.sqlite"), quarantine_after=1000)
    threads = [threading.Thread(target=lambda: [standings.charge("pn-a", "x") for _ in range(20)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert standings.get("pn-a").charges == 80


# -- the fleet ------------------------------------------------------------------------------------------
def fleet_of(tmp_path: Path, *pnodes: str) -> tuple[Fleet, Standings]:
    store = SQLiteStore(tmp_path / "s.sqlite")
    standings = Standings(store)
    fleet = Fleet(store, MemoryConnector(MemoryFabric()), heartbeat_interval=3600, standings=standings)
    for i, pid in enumerate(pnodes):
        fleet.register(Membership(pid, f"h:{i + 1}", {"memory_budget_bytes": 8 * 2**30}, "2.0.0"))
    return fleet, standings


def test_a_quarantined_pnode_loses_its_vnodes_and_gets_none(tmp_path: Path) -> None:
    spec = dcnr.load_network(TINY)
    fleet, standings = fleet_of(tmp_path, "pn-a", "pn-b")
    first = fleet.placement(spec)
    on_a = sorted(v for v, p in first.items() if p == "pn-a")
    assert on_a and any(p == "pn-b" for p in first.values())  # both PNodes work
    assert standings.charge("pn-a", "mismatch")
    assert fleet.quarantine("pn-a") == [(spec.name, v) for v in on_a]
    assert set(fleet.lost(spec.name)) == set(on_a)  # recorded lost, as for a dead PNode
    assert {p.id for p in fleet.alive()} == {"pn-a", "pn-b"}  # still registered and alive
    fleet.heartbeat("pn-a", 0.0)  # and it may go on heartbeating
    again = fleet.placement(spec)
    assert set(again.values()) == {"pn-b"}
    assert all(again[v] == p for v, p in first.items() if p == "pn-b")  # the others' VNodes stay put
    standings.release("pn-a")
    fleet.register(Membership("pn-c", "h:3", {"memory_budget_bytes": 8 * 2**30}, "2.0.0"))
    assert fleet.placement(spec) == again  # a release places nothing back by itself


def test_placement_moves_vnodes_off_a_pnode_quarantined_behind_its_back(tmp_path: Path) -> None:
    """Quarantined in the standings without `Fleet.quarantine` (another process, or a crash between the two):
    the next placement still moves its VNodes and records them lost."""
    spec = dcnr.load_network(TINY)
    fleet, standings = fleet_of(tmp_path, "pn-a", "pn-b")
    first = fleet.placement(spec)
    on_a = {v for v, p in first.items() if p == "pn-a"}
    assert standings.charge("pn-a", "mismatch")
    again = fleet.placement(spec)
    assert set(again.values()) == {"pn-b"} and set(fleet.lost(spec.name)) == on_a


def test_a_fleet_without_standings_quarantines_nobody(tmp_path: Path) -> None:
    spec = dcnr.load_network(TINY)
    store = SQLiteStore(tmp_path / "s.sqlite")
    Standings(store).charge("pn-a", "mismatch")  # recorded, but this fleet was given no standings
    fleet = Fleet(store, MemoryConnector(MemoryFabric()), heartbeat_interval=3600)
    fleet.register(Membership("pn-a", "h:1", {"memory_budget_bytes": 8 * 2**30}, "2.0.0"))
    assert set(fleet.placement(spec).values()) == {"pn-a"}
