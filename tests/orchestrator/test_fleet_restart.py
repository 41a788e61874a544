"""The dead-after-missed-beats rule across an orchestrator restart: beats a PNode could not send while the
orchestrator was down do not count against it, and silence after the restart still does. The fleet's clock
is stepped by hand, so no test here depends on how fast a loaded machine runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dcnr.orchestrator import fleet as fleet_module
from dcnr.orchestrator.fleet import MISSED_BEATS, Fleet
from dcnr.orchestrator.store import SQLiteStore
from dcnr.transport.memory import MemoryConnector, MemoryFabric
from dcnr.transport.messages import Membership

INTERVAL = 10.0


class Clock:
    """time.time() as the fleet sees it: starts now, moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def fleet_on(store: SQLiteStore) -> Fleet:
    return Fleet(store, MemoryConnector(MemoryFabric()), heartbeat_interval=INTERVAL)


@pytest.mark.parametrize("restart", [False, True], ids=["running-all-along", "restarted"])
def test_missed_beats_count_from_the_last_beat_or_the_orchestrators_start(tmp_path: Path, restart: bool,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(fleet_module, "time", clock)
    store = SQLiteStore(tmp_path / "s.sqlite")
    fleet = fleet_on(store)
    for i, pid in enumerate(("pn-a", "pn-b")):
        fleet.register(Membership(pid, f"h:{i + 1}", {"memory_budget_bytes": 2**30}, "2.3.0"))
        fleet.heartbeat(pid, 0.0)
    clock.now += 2 * MISSED_BEATS * INTERVAL  # nobody beats (the orchestrator is down, when `restart`)
    if not restart:  # the orchestrator that was running all along saw them go silent
        assert fleet.sweep() == ["pn-a", "pn-b"]
        return
    fleet = fleet_on(store)  # started again on the same store
    assert fleet.sweep() == [] and {p.id for p in fleet.alive()} == {"pn-a", "pn-b"}
    for _ in range(2 * MISSED_BEATS):  # pn-a beats to the new orchestrator, pn-b stays silent
        clock.now += INTERVAL / 2
        fleet.heartbeat("pn-a", 0.0)
        assert fleet.sweep() == []
    clock.now += INTERVAL / 2 + 1  # past MISSED_BEATS intervals since the restart
    fleet.heartbeat("pn-a", 0.0)
    assert fleet.sweep() == ["pn-b"] and [p.id for p in fleet.alive()] == ["pn-a"]
    store.close()
