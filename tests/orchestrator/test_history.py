"""History that lasts: step events and fleet events are kept in the state store, survive a reopen, follow the
session's trajectory (a restore forgets the steps past its checkpoint), go with the session, and listeners can
start from any step."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dcnr.errors import InvalidArgument
from dcnr.orchestrator import store as store_module
from dcnr.orchestrator.app import Orchestrator
from dcnr.orchestrator.fleet import Fleet
from dcnr.orchestrator.history import History
from dcnr.orchestrator.relays import Relays
from dcnr.orchestrator.standing import Standings
from dcnr.orchestrator.store import FleetEvent, SessionRecord, SQLiteStore, ValidationEvent
from dcnr.transport.memory import MemoryConnector, MemoryFabric
from dcnr.transport.messages import Membership


def step_event(session: str, step: int, state: str = "running", loss: float = 1.0) -> dict[str, Any]:
    return {"session": session, "step": step, "steps": 5, "loss": loss, "costs": {"ce": loss},
            "tokens_per_second": 100.0 * step, "learning_rates": {"lr": 1e-3}, "duration_seconds": 0.5,
            "skipped": False, "state": state, "error": "", "network": "net"}


# -- the store ----------------------------------------------------------------------------------------
def test_step_events_survive_a_reopen_one_per_step_and_go_with_the_session(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    s = SQLiteStore(db)
    s.put_session(SessionRecord("s1", "net", "d", steps=5, batch_size=2, micro_batches=1, seed=0))
    s.put_session(SessionRecord("s2", "net", "d", steps=5, batch_size=2, micro_batches=1, seed=0))
    for step in (1, 2, 3):
        s.put_step_event("s1", step, {**step_event("s1", step), "at": 10.0 + step})
    s.put_step_event("s2", 1, step_event("s2", 1))
    s.put_step_event("s1", 2, {**step_event("s1", 2, loss=7.0), "at": 20.0})  # trained again: replaced
    s.close()
    s = SQLiteStore(db)
    assert [e["step"] for e in s.step_events("s1")] == [1, 2, 3]
    assert s.step_events("s1")[1]["loss"] == 7.0 and s.step_events("s1")[1]["at"] == 20.0
    assert [e["step"] for e in s.step_events("s1", from_step=2)] == [2, 3]
    assert [e["step"] for e in s.step_events("s1", limit=2)] == [1, 2]
    assert s.last_step_event("s1") == {**step_event("s1", 3), "at": 13.0}
    s.truncate_step_events("s1", 1)
    assert [e["step"] for e in s.step_events("s1")] == [1]
    assert s.delete_session("s1") and s.step_events("s1") == [] and s.last_step_event("s1") is None
    assert [e["step"] for e in s.step_events("s2")] == [1]  # another session's are untouched
    s.close()


def test_a_state_file_written_before_history_existed_gets_its_tables(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    old = sqlite3.connect(db)
    old.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                      "INSERT INTO meta VALUES ('schema_version', '1');")
    old.close()
    s = SQLiteStore(db)
    s.put_step_event("s1", 1, step_event("s1", 1))
    assert s.add_fleet_event(FleetEvent("joined", "pn-a")) == 1
    assert s.step_events("s1")[0]["step"] == 1
    s.close()


def test_fleet_events_are_numbered_listed_after_a_number_and_bounded(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "state.sqlite"
    s = SQLiteStore(db)
    first = s.add_fleet_event(FleetEvent("joined", "pn-a", "127.0.0.1:1", at=5.0))
    second = s.add_fleet_event(FleetEvent("dead", "pn-a", "missed 3 heartbeats"))
    s.close()
    s = SQLiteStore(db)
    assert s.list_fleet_events() == [FleetEvent("joined", "pn-a", "127.0.0.1:1", 5.0, first),
                                     s.list_fleet_events(after=first)[0]]
    assert [e.kind for e in s.list_fleet_events(after=first)] == ["dead"]
    assert s.list_fleet_events(after=second) == []
    assert [e.seq for e in s.list_fleet_events(limit=1)] == [first]  # the oldest after the number
    monkeypatch.setattr(store_module, "FLEET_EVENTS_KEPT", 500)
    for _ in range(1000 - second):
        s.add_fleet_event(FleetEvent("joined", "pn-b"))
    kept = s.list_fleet_events(limit=10_000)
    assert len(kept) == 500 and kept[-1].seq == 1000 and kept[0].seq == 501
    s.close()


def test_validation_verdicts_are_counted(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.sqlite")
    for verdict in ("pass", "pass", "fail", "trusted"):
        s.add_validation_event(ValidationEvent("net", "s1", 1, "fc/0", "pn-a", "pn-b", "", verdict, ""))
    assert s.count_validation_verdicts() == {"pass": 2, "fail": 1, "trusted": 1}
    s.close()


# -- the History service ----------------------------------------------------------------------------------
def test_history_stamps_steps_tells_observers_and_keeps_the_held_out_loss(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.sqlite")
    history = History(s)
    seen: list[dict[str, Any]] = []
    history.observe(seen.append)
    history.observe(lambda ev: 1 / 0)  # a failing observer is logged, never raised into training
    before = time.time()
    kept = history.record_step(step_event("s1", 1))
    assert kept["held_out_loss"] is None and before <= kept["at"] <= time.time()
    assert seen == [kept] and history.latest("s1") == kept and s.step_events("s1") == [kept]
    history.record_step(step_event("s1", 2))
    assert history.held_out("s1", 2.5) is not None
    assert [e["held_out_loss"] for e in History(s).steps("s1")] == [None, 2.5]  # kept: a new History reads it
    assert History(s).latest("s1")["step"] == 2  # type: ignore[index]
    history.rewound("s1", 1)
    assert history.latest("s1")["step"] == 1 and history.steps("s1", from_step=2) == []  # type: ignore[index]
    assert history.held_out("nobody", 1.0) is None
    with pytest.raises(ValueError, match="unknown fleet event kind"):
        history.fleet_event("exploded", "pn-a")
    with pytest.raises(InvalidArgument, match="limit"):
        history.fleet_events(limit=0)
    s.close()


def test_the_fleet_relays_and_standings_record_what_happens_to_pnodes(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.sqlite")
    history = History(s)
    standings = Standings(s, fleet_events=history.fleet_event)
    fleet = Fleet(s, MemoryConnector(MemoryFabric()), heartbeat_interval=3600, standings=standings,
                  events=history.fleet_event)
    relays = Relays(3600, lambda: (0, 0, 0, 0), events=history.fleet_event)
    fleet.register(Membership("pn-a", "h:1", {"memory_budget_bytes": 2**30}, "2.0.0"))
    fleet.register(Membership("pn-b", "h:2", {"memory_budget_bytes": 2**30}, "2.0.0"))
    assert standings.charge("pn-a", "a forged gradient")
    standings.release("pn-a", by="operator admin")
    fleet.unregister("pn-a")
    relays.register("rl-1", "127.0.0.1:7000")
    fleet.heartbeat_interval = relays.heartbeat_interval = 0.001  # both overdue now
    time.sleep(0.01)
    assert fleet.sweep() == ["pn-b"] and relays.sweep() == ["rl-1"]
    events = history.fleet_events()
    assert [(e.kind, e.pnode) for e in events] == [
        ("joined", "pn-a"), ("joined", "pn-b"), ("quarantined", "pn-a"), ("released", "pn-a"), ("left", "pn-a"),
        ("relay-joined", "rl-1"), ("dead", "pn-b"), ("relay-dead", "rl-1")]
    assert events[0].detail == "h:1" and events[2].detail == "a forged gradient"
    assert events[3].detail == "by operator admin"
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    fleet.close()
    s.close()


# -- sessions: listening from a step --------------------------------------------------------------------
@pytest.fixture()
def orch(tmp_path: Path) -> Iterator[Orchestrator]:
    o = Orchestrator(tmp_path / "state")  # wired, never started
    yield o
    o.stop()


def _session(o: Orchestrator, state: str, error: str = "") -> str:
    o.store.put_session(SessionRecord("s1", "net", "d", steps=5, batch_size=2, micro_batches=1, seed=0,
                                      state=state, step=3, error=error))
    return "s1"


def test_listening_from_a_step_replays_the_kept_history_and_ends_with_the_session(orch: Orchestrator) -> None:
    sid = _session(orch, "completed")
    for step in (1, 2):
        orch.history.record_step(step_event(sid, step))
    orch.history.record_step(step_event(sid, 3, state="completed"))
    assert [e["step"] for e in orch.sessions.listen(sid, from_step=2)] == [2, 3]
    assert [e["step"] for e in orch.sessions.listen(sid, from_step=0)] == [1, 2, 3]
    assert list(orch.sessions.listen(sid)) == []  # without a step: only what this process saw live


def test_a_session_that_ended_without_a_last_step_says_how_it_ended(orch: Orchestrator) -> None:
    sid = _session(orch, "failed", error="PNode pn-a left")
    orch.history.record_step(step_event(sid, 1))
    events = list(orch.sessions.listen(sid, from_step=1))
    assert [e["state"] for e in events] == ["running", "failed"]
    assert events[-1]["error"] == "PNode pn-a left" and math.isnan(events[-1]["loss"])


def test_listening_from_a_step_follows_live_events_without_gaps_or_repeats(orch: Orchestrator) -> None:
    sid = _session(orch, "running")
    live = orch.sessions._state(sid)
    orch.sessions._emit(live, step_event(sid, 1), step=True)
    orch.sessions._emit(live, step_event(sid, 2), step=True)
    stream = orch.sessions.listen(sid, from_step=1)
    assert next(stream)["step"] == 1  # the history is read at the first event: step 3 comes live
    orch.sessions._emit(live, step_event(sid, 3, state="completed"), step=True)
    assert [e["step"] for e in stream] == [2, 3]
    assert [e["step"] for e in orch.history.steps(sid)] == [1, 2, 3]
    assert orch.sessions.delete(sid) and orch.history.steps(sid) == []
