"""When a PNode's part of each training step happens: the records behind the orchestrator's step timeline.

Owns, per network, the records of its current training run on this PNode: each hosted
VNode's forward and backward of each micro-batch and its update, each hop as it leaves for
another PNode and as one arrives from another. Times are seconds on this PNode's monotonic
clock since the run's BeginRun arrived (the orchestrator aligns them on its own clock); each
kind is capped at `MAX_RECORDS` per run. Recording is a clock read and a list append (a few
hundred nanoseconds), from whichever thread sees the event; the records go out, and are
forgotten, with the update that ends the step (`finish`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dcnr.transport.messages import Hop, StepTiming, TimedHop, TimedWork

MAX_RECORDS = 20_000  # of each kind (work, hops sent, hops received) per run


@dataclass
class _Records:
    run: str
    began: float  # perf_counter when BeginRun arrived
    work: list[tuple[Any, ...]] = field(default_factory=list)
    sent: list[tuple[Any, ...]] = field(default_factory=list)
    received: list[tuple[Any, ...]] = field(default_factory=list)
    truncated: bool = False

    def add(self, into: list[tuple[Any, ...]], record: tuple[Any, ...]) -> None:
        if len(into) < MAX_RECORDS:
            into.append(record)
        else:
            self.truncated = True


class StepTimer:
    """The timing records of each network's current training run on one PNode."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # off: nothing is recorded and updates report no timing
        self._runs: dict[str, _Records] = {}  # network -> its current training run
        self._lock = threading.Lock()

    @staticmethod
    def now() -> float:
        return time.perf_counter()

    def begin(self, network: str, run: str) -> None:
        """A training run of `network` begins here now (its BeginRun arrived)."""
        if self.enabled:
            with self._lock:
                self._runs[network] = _Records(run, time.perf_counter())

    def _records(self, network: str, run: str) -> _Records | None:
        found = self._runs.get(network)
        return found if found is not None and found.run == run else None

    def work(self, network: str, run: str, vnode: str, op: str, micro_batch: int, start: float, end: float) -> None:
        """A hosted VNode computed from `start` to `end` (`now()` values); ignored unless `run` is the network's
        current training run."""
        rec = self._records(network, run)
        if rec is not None:
            rec.add(rec.work, (vnode, op, micro_batch, start - rec.began, end - rec.began))

    def updated(self, network: str, vnode: str, start: float, end: float) -> None:
        """A hosted VNode applied its update (op "update", micro-batch 0) for the network's current run."""
        rec = self._runs.get(network)
        if rec is not None:
            rec.add(rec.work, (vnode, "update", 0, start - rec.began, end - rec.began))

    def sent(self, hop: Hop, nbytes: int) -> None:
        """`hop` leaves for another PNode now."""
        rec = self._records(hop.network, hop.run)
        if rec is not None:
            rec.add(rec.sent, (hop.vnode, hop.op, hop.micro_batch, hop.index, time.perf_counter() - rec.began,
                               nbytes, ""))

    def received(self, hop: Hop, nbytes: int) -> None:
        """`hop` arrived now from another PNode (`hop.sender`)."""
        rec = self._records(hop.network, hop.run)
        if rec is not None:
            rec.add(rec.received, (hop.vnode, hop.op, hop.micro_batch, hop.index, time.perf_counter() - rec.began,
                                   nbytes, hop.sender))

    def finish(self, network: str) -> StepTiming | None:
        """The records of the network's current training run, forgotten here (None when there are none)."""
        with self._lock:
            rec = self._runs.pop(network, None)
        if rec is None:
            return None
        return StepTiming(rec.run, tuple(TimedWork(*w) for w in rec.work[:MAX_RECORDS]),
                          tuple(TimedHop(*h) for h in rec.sent[:MAX_RECORDS]),
                          tuple(TimedHop(*h) for h in rec.received[:MAX_RECORDS]), rec.truncated)
