"""History that lasts: the step events of training sessions and the fleet's events, kept in the state store.

Owns what is remembered of a session's steps (one entry per step, with the time it was
recorded and the held-out loss once the session's network is evaluated on its dataset), the
rule that the history is the session's trajectory as it stands (a session put back to a
checkpoint forgets the steps past it, and a step trained again replaces its entry; all go with
the session), the kinds of fleet events, and telling in-process observers (metrics) about each
step. Everything lives in the `StateStore`, so it survives orchestrator restarts; the fleet's
history keeps its newest `store.FLEET_EVENTS_KEPT` entries. Knows nothing of gRPC or HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dcnr.errors import InvalidArgument
from dcnr.orchestrator.store import FleetEvent, StateStore

log = logging.getLogger("dcnr.orchestrator")

# what happens to PNodes and relays, as the fleet's history records it
FLEET_KINDS = ("joined", "dead", "left", "quarantined", "released", "paused", "resumed", "relay-joined", "relay-dead")
MAX_FLEET_EVENTS = 10_000  # the most events one listing returns

StepObserver = Callable[[dict[str, Any]], None]  # called with each step event as it is recorded
FleetRecorder = Callable[[str, str, str], None]  # (kind, PNode or relay id, detail): how services report events


class History:
    """Step events and fleet events of one orchestrator (thread-safe)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._observers: list[StepObserver] = []
        self._latest: dict[str, dict[str, Any]] = {}  # session -> its newest step event (read through)
        self._lock = threading.Lock()

    # -- step events ----------------------------------------------------------------------------------
    def observe(self, observer: StepObserver) -> None:
        """Call `observer` with every step event recorded from now on (on the session's thread: keep it quick)."""
        self._observers.append(observer)

    def record_step(self, event: dict[str, Any]) -> dict[str, Any]:
        """Keep the event of a finished step (a dict with "session" and "step", as sessions emit it); returns it
        as kept: with the time it was recorded ("at") and no held-out loss yet."""
        kept = {**event, "at": time.time(), "held_out_loss": None}
        self.store.put_step_event(kept["session"], int(kept["step"]), kept)
        with self._lock:
            self._latest[kept["session"]] = kept
        for observer in self._observers:
            try:
                observer(kept)
            except Exception:  # an observer never stops training
                log.exception("a step observer failed")
        return kept

    def steps(self, session: str, from_step: int = 0, limit: int = 0) -> list[dict[str, Any]]:
        """The session's kept step events from step `from_step` on, in step order (at most `limit`; 0: all)."""
        return self.store.step_events(session, max(0, from_step), limit)

    def latest(self, session: str) -> dict[str, Any] | None:
        """The session's newest kept step event."""
        with self._lock:
            found = self._latest.get(session)
        if found is None:
            found = self.store.last_step_event(session)
            if found is not None:
                with self._lock:
                    self._latest.setdefault(session, found)
        return found

    def rewound(self, session: str, step: int) -> None:
        """The session went back to its checkpoint at `step`: the steps past it are no longer its history."""
        self.store.truncate_step_events(session, step)
        with self._lock:
            self._latest.pop(session, None)

    def forget(self, session: str) -> None:
        """The session was deleted (the store deleted its step events with it)."""
        with self._lock:
            self._latest.pop(session, None)

    def held_out(self, session: str, loss: float) -> dict[str, Any] | None:
        """Note the held-out loss measured now on the session's dataset, on its newest step; returns that step's
        event (None while the session has none)."""
        latest = self.latest(session)
        if latest is None:
            return None
        kept = {**latest, "held_out_loss": float(loss)}
        self.store.put_step_event(session, int(kept["step"]), kept)
        with self._lock:
            self._latest[session] = kept
        return kept

    # -- the fleet ------------------------------------------------------------------------------------
    def fleet_event(self, kind: str, pnode: str, detail: str = "") -> None:
        """Record what happened to a PNode or relay; a failure to record is logged, never raised (the change
        it records has happened)."""
        if kind not in FLEET_KINDS:
            raise ValueError(f"unknown fleet event kind {kind!r}; one of {', '.join(FLEET_KINDS)}")
        try:
            self.store.add_fleet_event(FleetEvent(kind, pnode, detail))
        except Exception:
            log.exception("could not record that %s %s", pnode, kind)

    def fleet_events(self, after: int = 0, limit: int = 1000) -> list[FleetEvent]:
        """Fleet events numbered after `after`, oldest first, at most `limit` (1 to `MAX_FLEET_EVENTS`)."""
        if not 1 <= limit <= MAX_FLEET_EVENTS:
            raise InvalidArgument(f"limit must be between 1 and {MAX_FLEET_EVENTS}, got {limit}")
        return self.store.list_fleet_events(max(0, after), limit)
