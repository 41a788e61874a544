"""The standing of PNode identities: trust marks, charges, quarantine, and the validation log.

It does not judge: the validator does, and calls `charge` and `record` with its verdicts;
operators call `trust` and `release`. A PNode quarantined here gets no work: the fleet asks
`quarantined` when it places VNodes (and `Fleet.quarantine` takes away what it held).
Everything is kept in the store, by PNode id, so a standing survives the PNode's restarts,
its leaving, and the orchestrator's restarts.
"""

from __future__ import annotations

import logging
import threading
import time

from dcnr.errors import Conflict, InvalidArgument, NotFound
from dcnr.orchestrator.history import FleetRecorder
from dcnr.orchestrator.store import Standing, StateStore, ValidationEvent

log = logging.getLogger("dcnr.orchestrator")

QUARANTINE_AFTER = 1  # charges that quarantine a PNode
COOLING_OFF = 86400.0  # seconds a quarantine lasts unless an operator releases it sooner
MAX_EVENTS = 10_000  # the most events one listing returns


class Standings:
    """Trust, charges and quarantine of PNode identities, and the validation log (thread-safe).

    A PNode is quarantined for `cooling_off` seconds once its charges reach `quarantine_after`; when the
    cooling-off ends it gets work again, but keeps its charges, so the next charge quarantines it at once
    until an operator releases it (which clears them)."""

    def __init__(self, store: StateStore, quarantine_after: int = QUARANTINE_AFTER,
                 cooling_off: float = COOLING_OFF, fleet_events: FleetRecorder | None = None) -> None:
        if quarantine_after < 1:
            raise InvalidArgument(f"quarantine_after must be at least 1, got {quarantine_after}")
        if cooling_off <= 0:
            raise InvalidArgument(f"the cooling-off must be positive, got {cooling_off:g} s")
        self.store = store
        self.quarantine_after = quarantine_after
        self.cooling_off = cooling_off
        self.fleet_events = fleet_events or (lambda kind, pnode, detail: None)  # quarantines and releases
        self._lock = threading.Lock()  # each read-modify-write of a standing is whole

    def get(self, pnode: str) -> Standing:
        """The PNode's standing (the default one for an identity nothing was recorded about)."""
        return self.store.get_standing(pnode)

    def trusted(self, pnode: str) -> bool:
        return self.store.get_standing(pnode).trusted

    def quarantined(self, pnode: str, now: float | None = None) -> bool:
        """Whether the PNode is in quarantine at `now` (default: the current time)."""
        return self.store.get_standing(pnode).quarantined(now)

    def trust(self, pnode: str, trusted: bool = True, by: str = "") -> Standing:
        """Mark (or unmark) a PNode as trusted; logged as a "trusted" or "untrusted" event. NotFound for an id
        that never registered nor has a standing (a typo, most likely)."""
        with self._lock:
            self._known(pnode)
            rec = self.store.get_standing(pnode)
            rec.trusted = trusted
            self.store.put_standing(rec)
            self._log_operator(pnode, "trusted" if trusted else "untrusted", by)
        log.info("PNode %s %s%s", pnode, "trusted" if trusted else "no longer trusted", f" by {by}" if by else "",
                 extra={"pnode": pnode})
        return rec

    def release(self, pnode: str, by: str = "", now: float | None = None) -> Standing:
        """End a PNode's quarantine and clear its charges; logged as a "released" event. NotFound for an
        unknown id, Conflict when it is not quarantined."""
        with self._lock:
            self._known(pnode)
            rec = self.store.get_standing(pnode)
            if not rec.quarantined(now):
                raise Conflict(f"PNode {pnode} is not quarantined (charges: {rec.charges}); nothing to release")
            rec.charges, rec.quarantined_until, rec.reason = 0, 0.0, ""
            self.store.put_standing(rec)
            self._log_operator(pnode, "released", by)
        log.info("PNode %s released from quarantine%s", pnode, f" by {by}" if by else "", extra={"pnode": pnode})
        self.fleet_events("released", pnode, f"by {by}" if by else "")
        return rec

    def charge(self, pnode: str, reason: str, now: float | None = None) -> bool:
        """Count one failed validation against a PNode. When its charges reach `quarantine_after` it is
        quarantined for the cooling-off (a charge during a quarantine extends it); returns True when this
        charge put it in quarantine (its caller then takes its work away: `Fleet.quarantine`)."""
        at = _now(now)
        with self._lock:
            rec = self.store.get_standing(pnode)
            was = rec.quarantined(at)
            rec.charges += 1
            rec.reason = reason
            if rec.charges >= self.quarantine_after:
                rec.quarantined_until = max(rec.quarantined_until, at + self.cooling_off)
            self.store.put_standing(rec)
        quarantined = rec.quarantined(at) and not was
        if quarantined:
            log.warning("PNode %s quarantined until %s after %d charge(s): %s", pnode,
                        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.quarantined_until)), rec.charges,
                        reason, extra={"pnode": pnode})
            self.fleet_events("quarantined", pnode, reason)
        else:
            log.info("PNode %s charged (%d): %s", pnode, rec.charges, reason, extra={"pnode": pnode})
        return quarantined

    def record(self, event: ValidationEvent) -> int:
        """Append an event to the validation log; returns its number."""
        return self.store.add_validation_event(event)

    def events(self, session: str = "", network: str = "", limit: int = 1000) -> list[ValidationEvent]:
        """The newest `limit` events (1 to `MAX_EVENTS`) of a session, a network, both or all; oldest first."""
        if not 1 <= limit <= MAX_EVENTS:
            raise InvalidArgument(f"limit must be between 1 and {MAX_EVENTS}, got {limit}")
        return self.store.list_validation_events(session, network, limit)

    def _known(self, pnode: str) -> None:
        if not pnode:
            raise InvalidArgument("a PNode id is needed")
        try:
            self.store.get_pnode(pnode)
        except NotFound:
            if not any(s.pnode == pnode for s in self.store.list_standings()):
                raise NotFound(f"unknown PNode {pnode!r}: it never registered and has no standing") from None

    def _log_operator(self, pnode: str, verdict: str, by: str) -> None:
        self.store.add_validation_event(ValidationEvent("", "", 0, "", pnode, "", "", verdict,
                                                        f"by {by}" if by else ""))


def _now(now: float | None) -> float:
    return time.time() if now is None else now
